"""A manual-clock harness for driving the group coordinator like a set of consumers would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from strom.broker.coordinator import (
    GroupConfig,
    GroupCoordinator,
    GroupStore,
    JoinResult,
    ManualClock,
    OffsetStore,
    SyncResult,
)
from strom.broker.coordinator.group import Group, GroupState, Member

T = TypeVar("T")

PROTOCOLS: list[tuple[str, bytes]] = [("range", b"meta")]


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async test body on a fresh event loop."""

    async def wrapper() -> T:
        return await main()

    return asyncio.run(wrapper())


async def settle() -> None:
    """Let every runnable task advance to its next await."""
    for _ in range(10):
        await asyncio.sleep(0)


class Harness:
    """A coordinator on a manual clock. ``persist=True`` gives it a :class:`GroupStore`, and
    :meth:`restart` then stands for a broker restart (same files, a new coordinator)."""

    def __init__(self, tmp_path: Path, *, persist: bool = False, **config: Any) -> None:
        self.tmp_path = tmp_path
        self.persist = persist
        self.clock = ManualClock()
        self.cfg = GroupConfig(
            **{"initial_rebalance_delay_ms": 0, "min_session_timeout_ms": 10, **config}
        )
        self._open()

    def _open(self) -> None:
        self.offsets = OffsetStore(self.tmp_path / "offsets.log")
        self.store = GroupStore(self.tmp_path / "groups.log") if self.persist else None
        self.coord = GroupCoordinator(
            self.offsets, config=self.cfg, clock=self.clock, store=self.store
        )

    def close(self) -> None:
        self.offsets.close()
        if self.store is not None:
            self.store.close()

    def restart(self, clock_ms: int = 5_000_000) -> None:
        """Close the files and open a new coordinator on them, its clock set to ``clock_ms``
        (a new process's monotonic clock has nothing to do with the old one's)."""
        self.close()
        self.clock.now_ms = clock_ms
        self._open()

    def join(
        self,
        group: str = "g",
        member_id: str = "",
        *,
        protocols: Sequence[tuple[str, bytes]] = PROTOCOLS,
        instance: str | None = None,
        session_ms: int = 1000,
        rebalance_ms: int = 2000,
        protocol_type: str = "consumer",
        require_known: bool = False,
        client_id: str = "client",
    ) -> asyncio.Task[JoinResult]:
        return asyncio.ensure_future(
            self.coord.join_group(
                group,
                member_id,
                instance,
                client_id,
                "/127.0.0.1",
                session_ms,
                rebalance_ms,
                protocol_type,
                list(protocols),
                require_known,
            )
        )

    def sync(
        self,
        group: str,
        result: JoinResult,
        assignments: Sequence[tuple[str, bytes]] = (),
        instance: str | None = None,
    ) -> asyncio.Task[SyncResult]:
        return asyncio.ensure_future(
            self.coord.sync_group(
                group,
                result.generation_id,
                result.member_id,
                instance,
                result.protocol_type,
                result.protocol_name,
                list(assignments),
            )
        )

    def heartbeat(self, group: str, result: JoinResult, instance: str | None = None) -> int:
        return self.coord.heartbeat(group, result.generation_id, result.member_id, instance)

    async def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.coord.expire()
        await settle()

    def state(self, group: str = "g") -> str:
        return self.coord.describe_group(group).state

    async def form(self, group: str, n: int, **join_args: Any) -> list[JoinResult]:
        """Join ``n`` members at once (they must arrive within the initial delay) and sync
        them, the leader assigning ``b"a-<member id>"`` to each. Returns the join results."""
        tasks = [self.join(group, **join_args) for _ in range(n)]
        await settle()
        for _ in range(100):
            if all(t.done() for t in tasks):
                break
            await self.advance(max(self.coord.config.initial_rebalance_delay_ms, 1))
        results = [t.result() for t in tasks]
        await self.sync_all(group, results)
        return results

    async def sync_all(self, group: str, results: Sequence[JoinResult]) -> list[SyncResult]:
        leader = next(r for r in results if r.member_id == r.leader)
        assignments = [(m.member_id, b"a-" + m.member_id.encode()) for m in leader.members]
        syncs = [self.sync(group, r, assignments if r is leader else ()) for r in results]
        await settle()
        return [s.result() for s in syncs]


def settled_group(group_id: str, *, members: int, generation: int = 1) -> Group:
    """A group as a coordinator would have it settled: Stable with ``members`` members
    (``m0`` leads, ``m1`` is static as ``inst``), or Empty when ``members`` is 0."""
    group = Group(group_id, generation_id=generation, protocol_type="consumer")
    for i in range(members):
        group.add(
            Member(
                f"m{i}",
                "inst" if i == 1 else None,
                "client",
                "/127.0.0.1",
                1000,
                2000,
                "consumer",
                [("range", b"\x00meta"), ("roundrobin", b"")],
                assignment=bytes([i, 255]),
                is_new=False,
            )
        )
    if members:
        group.protocol_name = "range"
        group.state = GroupState.STABLE
    return group
