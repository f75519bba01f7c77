"""Session expiry, leaving, rebalance and sync timeouts, static membership, the timer task."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from coord_harness import Harness, run, settle

from strom.broker.coordinator import GroupConfig, GroupCoordinator, OffsetStore, errors


def test_killed_member_expires_and_the_others_rebalance(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a, b, c = await h.form("g", 3, session_ms=300)
        # a and b keep heartbeating; c was killed.
        await h.advance(150)
        assert h.heartbeat("g", a) == errors.NONE
        assert h.heartbeat("g", b) == errors.NONE
        await h.advance(149)
        assert h.state() == "Stable"
        await h.advance(1)
        assert h.state() == "PreparingRebalance"  # c's session (300 ms) ran out
        assert h.coord.get_group("g") is not None
        assert c.member_id not in h.coord.get_group("g").members  # type: ignore[union-attr]
        assert h.heartbeat("g", a) == errors.REBALANCE_IN_PROGRESS
        assert h.heartbeat("g", c) == errors.UNKNOWN_MEMBER_ID
        rejoin = [
            h.join("g", a.member_id, session_ms=300),
            h.join("g", b.member_id, session_ms=300),
        ]
        await settle()
        a2, b2 = (t.result() for t in rejoin)
        assert a2.generation_id == b2.generation_id == a.generation_id + 1
        assert {m.member_id for m in a2.members} == {a.member_id, b.member_id}
        synced = await h.sync_all("g", [a2, b2])
        assert [s.error_code for s in synced] == [errors.NONE, errors.NONE]
        assert h.state() == "Stable"

    run(main)


def test_member_awaiting_join_does_not_expire(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a, b = await h.form("g", 2, session_ms=100, rebalance_ms=1000)
        waiting = h.join("g", a.member_id, session_ms=100, rebalance_ms=1000)
        await settle()
        for _ in range(4):  # b keeps its session alive; a waits in JoinGroup past 100 ms
            await h.advance(50)
            assert h.heartbeat("g", b) == errors.REBALANCE_IN_PROGRESS
        assert not waiting.done()
        await h.join("g", b.member_id, session_ms=100, rebalance_ms=1000)
        assert waiting.result().generation_id == 2

    run(main)


def test_member_not_rejoining_is_removed_at_rebalance_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a, b = await h.form("g", 2, session_ms=1000, rebalance_ms=300)
        again = h.join("g", a.member_id, session_ms=1000, rebalance_ms=300)
        await settle()
        await h.advance(299)
        h.heartbeat("g", b)  # alive, but never rejoins
        assert not again.done()
        await h.advance(1)
        result = again.result()
        assert [m.member_id for m in result.members] == [a.member_id]
        assert h.heartbeat("g", b) == errors.UNKNOWN_MEMBER_ID

    run(main)


def test_leave_triggers_rebalance(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a, b, c = await h.form("g", 3)
        left = h.coord.leave_group("g", [(c.member_id, None), ("ghost", None)])
        assert left.error_code == errors.NONE
        assert [m.error_code for m in left.members] == [errors.NONE, errors.UNKNOWN_MEMBER_ID]
        assert h.state() == "PreparingRebalance"
        tasks = [h.join("g", a.member_id), h.join("g", b.member_id)]
        await settle()
        assert all(len(t.result().members) in (0, 2) for t in tasks)
        assert tasks[0].result().generation_id == 2
        await h.sync_all("g", [t.result() for t in tasks])
        # Everyone leaves: the group becomes Empty with a new generation.
        h.coord.leave_group("g", [(a.member_id, None)])
        h.coord.leave_group("g", [(b.member_id, None)])
        assert h.state() == "Empty"
        assert h.coord.get_group("g").generation_id == 3  # type: ignore[union-attr]
        nogroup = h.coord.leave_group("other", [("x", None)])
        assert nogroup.members[0].error_code == errors.UNKNOWN_MEMBER_ID
        assert h.coord.leave_group("", []).error_code == errors.INVALID_GROUP_ID

    run(main)


def test_leave_during_join_answers_the_leaver_and_completes(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a, b = await h.form("g", 2)
        a_join = h.join("g", a.member_id)
        await settle()
        h.coord.leave_group("g", [(b.member_id, None)])
        await settle()
        assert a_join.result().generation_id == 2
        assert len(a_join.result().members) == 1

    run(main)


def test_leader_that_never_syncs_is_removed_after_rebalance_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        tasks = [h.join("g", rebalance_ms=200), h.join("g", rebalance_ms=200)]
        await settle()
        await h.advance(10)
        await h.advance(10)
        leader, follower = (t.result() for t in tasks)
        waiting = h.sync("g", follower)
        await settle()
        await h.advance(199)
        assert not waiting.done()
        await h.advance(1)
        assert waiting.result().error_code == errors.REBALANCE_IN_PROGRESS
        assert h.heartbeat("g", leader) == errors.UNKNOWN_MEMBER_ID
        rejoined = await h.join("g", follower.member_id, rebalance_ms=200)
        assert rejoined.leader == follower.member_id

    run(main)


def test_static_member_restart_keeps_assignment_without_rebalance(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a = h.join("g", instance="i-a")
        b = h.join("g", instance="i-b")
        await settle()
        await h.advance(10)
        await h.advance(10)
        ra, rb = a.result(), b.result()
        assert ra.member_id.startswith("i-a-")
        assert [m.group_instance_id for m in ra.members] == ["i-a", "i-b"]
        await h.sync_all("g", [ra, rb])
        # b restarts: a new process joins with the same instance id and no member id.
        restarted = await h.join("g", instance="i-b")
        assert restarted.error_code == errors.NONE
        assert restarted.member_id != rb.member_id
        assert restarted.generation_id == rb.generation_id
        assert h.state() == "Stable"
        assert h.heartbeat("g", rb, "i-b") == errors.FENCED_INSTANCE_ID
        synced = await h.sync("g", restarted, instance="i-b")
        assert synced.assignment == b"a-" + rb.member_id.encode()
        assert h.heartbeat("g", restarted, "i-b") == errors.NONE
        assert h.heartbeat("g", ra, "i-a") == errors.NONE

    run(main)


def test_static_leader_restart_is_not_told_it_leads(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        first = await h.join("g", instance="solo")
        await h.sync("g", first, [(first.member_id, b"mine")], instance="solo")
        again = await h.join("g", instance="solo")
        assert again.leader == first.member_id != again.member_id
        assert again.members == []
        assert (await h.sync("g", again, instance="solo")).assignment == b"mine"

    run(main)


def test_static_member_not_rejoining_stays_during_rebalance(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a = h.join("g", rebalance_ms=100, session_ms=5000)
        s = h.join("g", instance="static", rebalance_ms=100, session_ms=5000)
        await settle()
        await h.advance(10)
        await h.advance(10)
        ra, rs = a.result(), s.result()
        await h.sync_all("g", [ra, rs])
        again = h.join("g", ra.member_id, rebalance_ms=100, session_ms=5000)
        await settle()
        await h.advance(100)  # the static member did not rejoin in time: it is kept
        assert {m.group_instance_id for m in again.result().members} == {None, "static"}
        await h.advance(5000)  # ... until its session expires
        group = h.coord.get_group("g")
        assert group is not None and rs.member_id not in group.members

    run(main)


def test_static_member_with_wrong_member_id_is_fenced(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        first = await h.join("g", instance="inst")
        await h.sync("g", first, instance="inst")
        fenced = await h.join("g", "someone-else", instance="inst")
        assert fenced.error_code == errors.FENCED_INSTANCE_ID
        unknown = await h.join("g", first.member_id, instance="other")
        assert unknown.error_code == errors.UNKNOWN_MEMBER_ID
        left = h.coord.leave_group("g", [("", "inst")])
        assert left.members[0].error_code == errors.NONE
        assert h.state() == "Empty"

    run(main)


def test_background_timer_expires_sessions_in_real_time(tmp_path: Path) -> None:
    async def main() -> None:
        offsets = OffsetStore(tmp_path / "o.log")
        cfg = GroupConfig(initial_rebalance_delay_ms=50, min_session_timeout_ms=10)
        coord = GroupCoordinator(offsets, config=cfg, offsets_sync_interval_ms=50)
        coord.start()
        try:
            started = time.monotonic()
            joins = [
                asyncio.ensure_future(
                    coord.join_group("g", "", None, "c", "h", 200, 400, "consumer", [("r", b"")])
                )
                for _ in range(2)
            ]
            a, b = await asyncio.wait_for(asyncio.gather(*joins), 2)
            assert 0.04 < time.monotonic() - started < 1.0
            leader, follower = (a, b) if a.member_id == a.leader else (b, a)
            syncs = [
                coord.sync_group("g", 1, leader.member_id, None, None, None, []),
                coord.sync_group("g", 1, follower.member_id, None, None, None, []),
            ]
            await asyncio.wait_for(asyncio.gather(*syncs), 2)
            # Only the leader heartbeats; the follower's 200 ms session runs out.
            for _ in range(40):
                await asyncio.sleep(0.02)
                code = coord.heartbeat("g", 1, leader.member_id)
                if code == errors.REBALANCE_IN_PROGRESS:
                    break
            assert code == errors.REBALANCE_IN_PROGRESS
            assert time.monotonic() - started >= 0.2
            rejoined = await asyncio.wait_for(
                coord.join_group(
                    "g", leader.member_id, None, "c", "h", 200, 400, "consumer", [("r", b"")]
                ),
                2,
            )
            assert [m.member_id for m in rejoined.members] == [leader.member_id]
        finally:
            await coord.stop()
            offsets.close()

    run(main)
