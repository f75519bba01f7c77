"""A manual-clock harness for driving the group coordinator like a set of consumers would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from strom.broker.coordinator import (
    GroupConfig,
    GroupCoordinator,
    JoinResult,
    ManualClock,
    OffsetStore,
    SyncResult,
)

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
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.clock = ManualClock()
        self.offsets = OffsetStore(tmp_path / "offsets.log")
        cfg = {"initial_rebalance_delay_ms": 0, "min_session_timeout_ms": 10, **config}
        self.coord = GroupCoordinator(self.offsets, config=GroupConfig(**cfg), clock=self.clock)

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
