"""JoinGroup / SyncGroup: forming generations, leaders, member ids, protocols, the initial delay."""

from __future__ import annotations

from pathlib import Path

import pytest
from coord_harness import Harness, run, settle
from hypothesis import given
from hypothesis import strategies as st

from strom.broker.coordinator import errors, select_protocol


def test_single_member_join_and_sync(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        joined = await h.join("g", client_id="c1")
        assert joined.error_code == errors.NONE
        assert joined.member_id.startswith("c1-")
        assert joined.generation_id == 1
        assert joined.leader == joined.member_id
        assert joined.protocol_type == "consumer" and joined.protocol_name == "range"
        assert [(m.member_id, m.group_instance_id, m.metadata) for m in joined.members] == [
            (joined.member_id, None, b"meta")
        ]
        assert h.state() == "CompletingRebalance"
        synced = await h.sync("g", joined, [(joined.member_id, b"assign")])
        assert synced.error_code == errors.NONE
        assert synced.assignment == b"assign"
        assert synced.protocol_name == "range"
        assert h.state() == "Stable"
        assert h.heartbeat("g", joined) == errors.NONE

    run(main)


def test_three_members_leader_gets_metadata_followers_get_assignments(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=100)
        tasks = [h.join("g", protocols=[("range", f"m{i}".encode())]) for i in range(3)]
        await settle()
        assert not any(t.done() for t in tasks)
        assert h.state() == "PreparingRebalance"
        for _ in range(3):
            await h.advance(100)
        results = [t.result() for t in tasks]
        assert {r.error_code for r in results} == {errors.NONE}
        assert {r.generation_id for r in results} == {1}
        leader_id = results[0].member_id  # the first to join leads
        assert {r.leader for r in results} == {leader_id}
        leader, followers = results[0], results[1:]
        assert [m.metadata for m in leader.members] == [b"m0", b"m1", b"m2"]
        assert all(f.members == [] for f in followers)
        # Followers sync first and wait for the leader's assignment.
        follower_syncs = [h.sync("g", f) for f in followers]
        await settle()
        assert not any(s.done() for s in follower_syncs)
        assignments = [(m.member_id, m.member_id.encode()) for m in leader.members]
        leader_sync = await h.sync("g", leader, assignments)
        assert leader_sync.assignment == leader.member_id.encode()
        await settle()
        for f, s in zip(followers, follower_syncs, strict=True):
            assert s.result().error_code == errors.NONE
            assert s.result().assignment == f.member_id.encode()
        assert h.state() == "Stable"
        # A late sync in Stable returns the stored assignment.
        again = await h.sync("g", followers[0])
        assert again.assignment == followers[0].member_id.encode()

    run(main)


def test_leader_omitting_a_member_gives_it_an_empty_assignment(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        tasks = [h.join("g"), h.join("g")]
        await settle()
        await h.advance(10)
        await h.advance(10)
        leader, follower = (t.result() for t in tasks)
        waiting = h.sync("g", follower)
        await h.sync("g", leader, [(leader.member_id, b"x"), ("stranger", b"y")])
        await settle()
        assert waiting.result().error_code == errors.NONE
        assert waiting.result().assignment == b""

    run(main)


def test_member_id_required_flow(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        first = await h.join("g", require_known=True, client_id="kp")
        assert first.error_code == errors.MEMBER_ID_REQUIRED
        assert first.member_id.startswith("kp-")
        assert h.coord.get_group("g") is not None
        second = await h.join("g", first.member_id, require_known=True)
        assert second.error_code == errors.NONE
        assert second.member_id == first.member_id
        assert second.leader == first.member_id

    run(main)


def test_pending_member_id_expires_after_session_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        first = await h.join("g", require_known=True, session_ms=100)
        await h.advance(101)
        late = await h.join("g", first.member_id, require_known=True)
        assert late.error_code == errors.UNKNOWN_MEMBER_ID

    run(main)


def test_join_errors(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, min_session_timeout_ms=100, max_session_timeout_ms=1000)
        assert (await h.join("")).error_code == errors.INVALID_GROUP_ID
        assert (await h.join("g", session_ms=50)).error_code == errors.INVALID_SESSION_TIMEOUT
        assert (await h.join("g", session_ms=5000)).error_code == errors.INVALID_SESSION_TIMEOUT
        unknown = await h.join("g", "nobody", session_ms=500)
        assert unknown.error_code == errors.UNKNOWN_MEMBER_ID
        assert (await h.join("g", protocols=[], session_ms=500)).error_code == (
            errors.INCONSISTENT_GROUP_PROTOCOL
        )
        assert (await h.join("g", protocol_type="", session_ms=500)).error_code == (
            errors.INCONSISTENT_GROUP_PROTOCOL
        )

    run(main)


def test_protocol_selection_by_votes(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        prefs = [
            [("range", b"r0"), ("roundrobin", b"o0")],
            [("roundrobin", b"o1"), ("range", b"r1")],
            [("roundrobin", b"o2"), ("sticky", b"s2"), ("range", b"r2")],
        ]
        tasks = [h.join("g", protocols=p) for p in prefs]
        await settle()
        for _ in range(3):
            await h.advance(10)
        leader = tasks[0].result()
        assert leader.protocol_name == "roundrobin"
        assert [m.metadata for m in leader.members] == [b"o0", b"o1", b"o2"]

    run(main)


def test_inconsistent_protocols_rejected(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        first = h.join("g", protocols=[("range", b"")])
        await settle()
        other = await h.join("g", protocols=[("sticky", b"")])
        assert other.error_code == errors.INCONSISTENT_GROUP_PROTOCOL
        wrong_type = await h.join("g", protocol_type="connect")
        assert wrong_type.error_code == errors.INCONSISTENT_GROUP_PROTOCOL
        await h.advance(10)
        assert first.result().error_code == errors.NONE

    run(main)


def test_rejoin_with_same_member_id(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        leader, follower = await h.form("g", 2)
        # A follower rejoining with unchanged metadata gets the current generation back.
        same = await h.join("g", follower.member_id)
        assert same.error_code == errors.NONE
        assert same.generation_id == follower.generation_id
        assert same.members == [] and same.leader == leader.member_id
        assert h.state() == "Stable"
        # The leader rejoining forces a new generation; the follower learns by heartbeat.
        leader_again = h.join("g", leader.member_id)
        await settle()
        assert h.state() == "PreparingRebalance"
        assert h.heartbeat("g", follower) == errors.REBALANCE_IN_PROGRESS
        follower_again = await h.join("g", follower.member_id)
        assert follower_again.generation_id == follower.generation_id + 1
        assert (await leader_again).member_id == leader.member_id
        assert len((await leader_again).members) == 2

    run(main)


def test_follower_with_new_metadata_triggers_rebalance(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        leader, follower = await h.form("g", 2)
        changed = h.join("g", follower.member_id, protocols=[("range", b"new")])
        await settle()
        assert h.state() == "PreparingRebalance"
        relead = await h.join("g", leader.member_id)
        assert relead.generation_id == 2
        assert [m.metadata for m in relead.members] == [b"meta", b"new"]
        assert (await changed).generation_id == 2

    run(main)


def test_stale_generation_and_unknown_member(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        old = await h.join("g")
        await h.sync("g", old)
        new = await h.join("g", old.member_id)  # the leader rejoins: generation 2
        assert new.generation_id == 2
        await h.sync("g", new)
        assert h.heartbeat("g", old) == errors.ILLEGAL_GENERATION
        assert (await h.sync("g", old)).error_code == errors.ILLEGAL_GENERATION
        assert h.coord.heartbeat("g", 2, "ghost") == errors.UNKNOWN_MEMBER_ID
        assert h.coord.heartbeat("nogroup", 1, "ghost") == errors.UNKNOWN_MEMBER_ID
        assert h.coord.heartbeat("", 1, "ghost") == errors.INVALID_GROUP_ID
        bad_proto = await h.coord.sync_group("g", 2, new.member_id, None, "consumer", "other", [])
        assert bad_proto.error_code == errors.INCONSISTENT_GROUP_PROTOCOL

    run(main)


def test_initial_delay_is_honoured_and_extended_per_joiner(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=100)
        a = h.join("g", rebalance_ms=250)
        await settle()
        await h.advance(50)
        b = h.join("g", rebalance_ms=250)
        await settle()
        await h.advance(50)  # t=100: first delay over, but b arrived: extend by 100
        assert not a.done() and not b.done()
        await h.advance(99)
        assert not a.done()
        await h.advance(1)  # t=200: nobody new since t=100
        assert a.result().generation_id == b.result().generation_id == 1
        assert len(a.result().members) == 2

    run(main)


def test_initial_delay_capped_by_rebalance_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=100)
        tasks = [h.join("g", rebalance_ms=150)]
        await settle()
        for _ in range(2):  # a newcomer in every delay window: at t=50 and t=100
            await h.advance(50)
            tasks.append(h.join("g", rebalance_ms=150))
            await settle()
        await h.advance(49)
        assert not any(t.done() for t in tasks)
        # Budget: 100 ms initial + at most 50 ms (150 - 100) of extension: done at t=150.
        await h.advance(1)
        assert [len(t.result().members) for t in tasks] == [3, 0, 0]
        assert h.state() == "CompletingRebalance"

    run(main)


def test_cancelled_join_of_new_member_removes_it(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=100)
        keep = h.join("g")
        gone = h.join("g")
        await settle()
        gone.cancel()
        await settle()
        await h.advance(100)
        await h.advance(100)
        assert [m.member_id for m in keep.result().members] == [keep.result().member_id]

    run(main)


@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True),
        min_size=1,
        max_size=6,
    )
)
def test_select_protocol_properties(prefs: list[list[str]]) -> None:
    common = set(prefs[0]).intersection(*prefs[1:])
    if not common:
        with pytest.raises(ValueError):
            select_protocol(prefs)
        return
    chosen = select_protocol(prefs)
    assert all(chosen in p for p in prefs)
    votes = [next(x for x in p if x in common) for p in prefs]
    assert votes.count(chosen) == max(votes.count(v) for v in votes)
    if len(set(votes)) == 1:
        assert chosen == votes[0]
