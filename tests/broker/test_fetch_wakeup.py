"""Long-polling fetches are woken by appends to the partitions they read, and only by those."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from strom.broker.config import BrokerConfig
from strom.broker.handlers.base import Context
from strom.broker.handlers.fetch import fetch
from strom.broker.state import BrokerState
from strom.kafka.protocol.codec import FileRegion
from strom.kafka.protocol.framing import RequestHeader
from strom.kafka.protocol.records import Record, build_batch, decode_records


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


def test_a_marker_wakes_a_read_committed_fetch_at_the_lso(tmp_path: Path) -> None:
    """The handler itself: a read_committed long poll at the last stable offset answers with
    the transaction's records as soon as its commit marker is appended (it would answer empty
    after ``max_wait_ms`` otherwise)."""
    state = BrokerState.open(BrokerConfig(data_dir=tmp_path))
    state.logs.create_topic("t", 1)
    plog = state.logs.partition("t", 0)
    plog.append(build_batch([Record(value=b"open")], producer_id=3, transactional=True), 1)
    ctx = Context(state, RequestHeader(1, 12, 1, "test"), "127.0.0.1")
    request = {
        "replica_id": -1, "max_wait_ms": 60_000, "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": 1, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": "t", "partitions": [
            {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20},
        ]}],
        "forgotten_topics_data": [], "rack_id": "",
    }  # fmt: skip

    async def scenario() -> dict[str, object]:
        task = asyncio.create_task(fetch(ctx, request))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # waiting: nothing is below the LSO yet
        plog.append_marker(3, -1, commit=True, coordinator_epoch=0, now_ms=2)
        answer = await asyncio.wait_for(task, 30)
        assert answer is not None
        [part] = answer["responses"][0]["partitions"]
        return part  # type: ignore[no-any-return]

    try:
        part = asyncio.run(scenario())
        assert part["last_stable_offset"] == part["high_watermark"] == 2
        region = part["records"]
        assert isinstance(region, FileRegion)
        data = os.pread(region.fd, region.length, region.offset)
        assert [r.value for r in decode_records(data)] == [b"open"]
        assert part["aborted_transactions"] == []
    finally:
        state.close()
