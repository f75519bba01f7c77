"""Long-polling fetches are woken by appends to the partitions they read, and only by those."""

from __future__ import annotations

import asyncio
from pathlib import Path

from strom.broker.config import BrokerConfig
from strom.broker.state import BrokerState


def test_an_append_wakes_only_the_fetches_reading_its_partition(tmp_path: Path) -> None:
    state = BrokerState.open(BrokerConfig(data_dir=tmp_path))

    async def scenario() -> None:
        a = asyncio.create_task(state.wait_for_append([("a", 0), ("a", 1)], 60))
        b = asyncio.create_task(state.wait_for_append([("b", 0)], 60))
        await asyncio.sleep(0)  # both are waiting now
        state.notify_append([("a", 1), ("c", 0)])
        await asyncio.wait_for(a, 30)
        await asyncio.sleep(0)
        assert not b.done()  # another topic's append does not wake it
        state.notify_append([("b", 0)])
        await asyncio.wait_for(b, 30)
        assert state._waiters == {}  # nothing is left registered

    try:
        asyncio.run(scenario())
    finally:
        state.close()
