"""Group metadata survives a restart: reload, torn tails, expiry of absent members, deletions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from coord_harness import Harness, run, settle, settled_group

from strom.broker.coordinator import errors
from strom.broker.coordinator.group_store import group_record
from strom.broker.coordinator.journal import encode


def _snapshot(h: Harness, group: str = "g") -> tuple[Any, ...]:
    """Everything about a group that a restart must keep."""
    d = h.coord.describe_group(group)
    return (d.state, d.protocol_type, d.protocol, d.generation_id, d.leader, d.members)


def _commit(h: Harness, member: Any, offset: int, instance: str | None = None) -> int:
    [r] = h.coord.commit_offsets(
        "g", member.generation_id, member.member_id, instance, [("t", 0, offset, -1, None)]
    )
    return r.error_code


def test_stable_group_comes_back_stable(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True, initial_rebalance_delay_ms=10)
        a, b, c = await h.form("g", 3, session_ms=1000)
        before = _snapshot(h)
        assert before[0] == "Stable" and before[3] == 1
        assert _commit(h, b, 5) == errors.NONE
        h.restart()
        assert _snapshot(h) == before
        # The members carry on with their generation: no rejoin, no rebalance.
        for m in (a, b, c):
            assert h.heartbeat("g", m) == errors.NONE
        assert _commit(h, a, 6) == errors.NONE
        assert h.coord.fetch_offsets("g", [("t", 0)])[("t", 0)].offset == 6
        # A follower retrying its SyncGroup gets its assignment back.
        synced = await h.sync("g", c)
        assert synced.assignment == b"a-" + c.member_id.encode()
        # A follower rejoining with unchanged metadata keeps the generation.
        again = await h.join("g", b.member_id, session_ms=1000)
        assert (again.error_code, again.generation_id, again.leader) == (
            errors.NONE,
            1,
            a.member_id,
        )
        assert h.state() == "Stable"
        h.close()

    run(main)


def test_empty_group_keeps_its_generation(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True)
        [a] = await h.form("g", 1)
        h.coord.leave_group("g", [(a.member_id, None)])
        assert h.state() == "Empty"
        h.restart()
        d = h.coord.describe_group("g")
        assert (d.state, d.protocol_type, d.generation_id, d.members) == (
            "Empty",
            "consumer",
            2,
            [],
        )
        # A stale member of the old generation cannot commit; a new member starts at gen 3.
        assert _commit(h, a, 1) == errors.UNKNOWN_MEMBER_ID
        [fresh] = await h.form("g", 1)
        assert fresh.generation_id == 3
        h.close()

    run(main)


def test_absent_member_expires_after_its_session_and_survivors_rebalance(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True, initial_rebalance_delay_ms=10)
        a, b, c = await h.form("g", 3, session_ms=1000, rebalance_ms=2000)
        h.restart(clock_ms=123)  # the new clock is unrelated to the old deadlines
        # Sessions start at load time: nobody has expired yet.
        await h.advance(999)
        assert h.state() == "Stable"
        assert h.heartbeat("g", a) == errors.NONE
        assert h.heartbeat("g", b) == errors.NONE
        await h.advance(1)  # c never came back: its session ran out
        assert h.state() == "PreparingRebalance"
        assert h.heartbeat("g", a) == errors.REBALANCE_IN_PROGRESS
        assert h.heartbeat("g", c) == errors.UNKNOWN_MEMBER_ID
        rejoin = [h.join("g", m.member_id, session_ms=1000) for m in (a, b)]
        await settle()
        a2, b2 = (t.result() for t in rejoin)
        assert a2.generation_id == b2.generation_id == 2
        assert {m.member_id for m in a2.members} == {a.member_id, b.member_id}
        await h.sync_all("g", [a2, b2])
        assert h.state() == "Stable"
        # The new generation is what the next restart brings back.
        after = _snapshot(h)
        h.restart()
        assert _snapshot(h) == after
        assert h.heartbeat("g", a2) == errors.NONE
        assert h.heartbeat("g", a) == errors.ILLEGAL_GENERATION
        h.close()

    run(main)


def test_no_member_returns_the_group_ends_empty(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True, initial_rebalance_delay_ms=10)
        await h.form("g", 2, session_ms=500, rebalance_ms=500)
        h.restart()
        await h.advance(500)
        await h.advance(500)
        assert h.state() == "Empty"
        h.restart()
        d = h.coord.describe_group("g")
        assert (d.state, d.generation_id, d.members) == ("Empty", 2, [])
        h.close()

    run(main)


def test_restart_during_a_rebalance_brings_back_the_last_stable_generation(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True, initial_rebalance_delay_ms=10)
        a, b = await h.form("g", 2, session_ms=1000)
        stable = _snapshot(h)
        rejoin = [h.join("g", m.member_id, session_ms=1000) for m in (a, b)]
        await settle()
        a2, b2 = (t.result() for t in rejoin)
        assert a2.generation_id == 2 and h.state() == "CompletingRebalance"
        h.restart()  # before the leader's SyncGroup: generation 2 never settled
        assert _snapshot(h) == stable
        synced = await h.sync("g", a2)
        assert synced.error_code == errors.ILLEGAL_GENERATION
        assert h.heartbeat("g", b2) == errors.ILLEGAL_GENERATION  # it must rejoin
        assert h.heartbeat("g", b) == errors.NONE
        h.close()

    run(main)


def test_static_takeover_in_a_stable_group_is_persisted(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True)
        first = await h.join("g", instance="solo")
        await h.sync("g", first, [(first.member_id, b"mine")], instance="solo")
        again = await h.join("g", instance="solo")  # no rebalance: same generation
        assert again.generation_id == first.generation_id and again.member_id != first.member_id
        h.restart()
        assert h.heartbeat("g", again, "solo") == errors.NONE
        assert h.heartbeat("g", first, "solo") == errors.FENCED_INSTANCE_ID
        assert (await h.sync("g", again, instance="solo")).assignment == b"mine"
        h.close()

    run(main)


def test_deleted_groups_stay_deleted(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True, empty_group_retention_ms=1000)
        for group in ("deleted", "forgotten", "kept"):
            [m] = await h.form(group, 1)
            h.coord.leave_group(group, [(m.member_id, None)])
        h.coord.commit_offsets("kept", -1, "", None, [("t", 0, 1, -1, None)])
        assert h.coord.delete_groups(["deleted"]) == {"deleted": errors.NONE}
        await h.advance(1000)  # "forgotten": Empty for the retention time, no offsets
        assert [g.group_id for g in h.coord.list_groups()] == ["kept"]
        h.restart()
        assert [g.group_id for g in h.coord.list_groups()] == ["kept"]
        for group in ("deleted", "forgotten"):
            assert not h.coord.describe_group(group).exists
        assert h.coord.describe_group("kept").generation_id == 2
        # A group created again under a deleted name starts from scratch.
        [new] = await h.form("deleted", 1)
        assert new.generation_id == 1
        h.close()

    run(main)


@pytest.mark.parametrize("cut", [1, 7, -1])
def test_torn_tail_keeps_the_last_whole_record(tmp_path: Path, cut: int) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True)
        [a] = await h.form("g", 1)
        stable = _snapshot(h)
        h.close()
        path = tmp_path / "groups.log"
        good = path.stat().st_size
        # A later record (the group deleted) that a crash cut short: header or payload.
        with open(path, "ab") as f:
            f.write(encode({"t": "dg", "g": "g"})[:cut])
        h.restart()
        assert _snapshot(h) == stable
        assert path.stat().st_size == good
        h.coord.leave_group("g", [(a.member_id, None)])  # appends after the cut is gone
        h.restart()
        assert h.state() == "Empty"
        h.close()

    run(main)


def test_unreadable_records_are_skipped(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True)
        await h.form("good", 1)
        h.close()
        record = group_record(settled_group("bad", members=2))
        record["leader"] = "nobody"
        with open(tmp_path / "groups.log", "ab") as f:
            f.write(encode(record))
            f.write(encode({"t": "gm", "v": 99, "g": "future"}))
            f.write(encode({"t": "what", "g": "x"}))
        h.restart()
        assert [g.group_id for g in h.coord.list_groups()] == ["good"]
        h.close()

    run(main)
