"""Fetch: long-poll until ``min_bytes`` are available or ``max_wait_ms`` passes; send file bytes.

A long poll is woken by an append to any partition it reads (and only by those), so a record
reaches a waiting fetch as soon as it is written, not at ``max_wait_ms``. A transaction marker
is an append too: a read_committed poll waiting at the last stable offset wakes when it moves.

Isolation (KIP-98): ``read_uncommitted`` (0) reads up to the high watermark. ``read_committed``
(1) reads only whole batches whose last offset is below the partition's last stable offset
(the region is cut at a batch boundary, never through one), and answers with the aborted
transactions overlapping the returned offsets, from every segment, for the client to drop.
Both fill in ``last_stable_offset``.

Record data is never read into Python: each partition's answer is a region of a segment file that
the server hands to ``sendfile``. Fetch sessions (KIP-227) are not kept: the response's session id
0 tells clients to send full fetch requests, which the protocol allows.
"""

from __future__ import annotations

import time
from typing import Any

from strom.broker.handlers.base import Body, Context, api
from strom.broker.handlers.fetch_v0 import down_convert_responses
from strom.broker.handlers.topics import topic_by_id
from strom.broker.log import OffsetOutOfRangeError
from strom.broker.state import BrokerState
from strom.kafka.protocol.codec import FileRegion
from strom.kafka.protocol.errors import ErrorCode


def _error(
    index: int, code: ErrorCode, hw: int = -1, start: int = -1, stable: int = -1
) -> dict[str, Any]:
    return {
        "partition_index": index,
        "error_code": int(code),
        "high_watermark": hw,
        "last_stable_offset": stable if stable >= 0 else hw,
        "log_start_offset": start,
        "aborted_transactions": [],
        "preferred_read_replica": -1,
        # Empty, not null, as Kafka sends: Sarama cannot decode a null records field at all.
        "records": b"",
    }


def _read_all(
    state: BrokerState, req: Body, version: int
) -> tuple[list[dict[str, Any]], int, list[tuple[str, int]]]:
    """The response's topics, the record bytes in them, and the partitions read (an append to
    any of which ends a long poll)."""
    budget = max(req.get("max_bytes", 0x7FFFFFFF), 1) if version >= 3 else 0x7FFFFFFF
    committed = req.get("isolation_level", 0) == 1
    total = 0
    topics_out = []
    read: list[tuple[str, int]] = []
    known = state.logs.topics()
    for t in req["topics"]:
        name = t.get("topic")
        info = known.get(name) if name else topic_by_id(state, t.get("topic_id") or b"")
        parts_out = []
        for p in t["partitions"]:
            index = p["partition"]
            if info is None:
                code = (
                    ErrorCode.UNKNOWN_TOPIC_ID
                    if version >= 13
                    else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                )
                parts_out.append(_error(index, code))
                continue
            if not 0 <= index < info.partitions:
                parts_out.append(_error(index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            plog = state.logs.partition(info.name, index)
            read.append((info.name, index))
            limit = min(p["partition_max_bytes"], budget - total)
            if limit <= 0 and total > 0:
                # The response is full; later partitions report their offsets but no data.
                hw, start = plog.log_end_offset, plog.log_start_offset
                parts_out.append(_error(index, ErrorCode.NONE, hw, start, plog.last_stable_offset))
                parts_out[-1]["records"] = b""
                continue
            offset = p["fetch_offset"]
            try:
                got = plog.read(offset, max(limit, 1), committed=committed)
            except OffsetOutOfRangeError:
                parts_out.append(
                    _error(
                        index,
                        ErrorCode.OFFSET_OUT_OF_RANGE,
                        plog.log_end_offset,
                        plog.log_start_offset,
                        plog.last_stable_offset,
                    )
                )
                continue
            entry = _error(
                index, ErrorCode.NONE, got.high_watermark, got.log_start_offset,
                got.last_stable_offset,
            )  # fmt: skip
            if got.length > 0:
                entry["records"] = FileRegion(got.fd, got.position, got.length)
                total += got.length
                if committed:
                    entry["aborted_transactions"] = [
                        {"producer_id": pid, "first_offset": first}
                        for pid, first in plog.aborted_transactions(offset, got.end_offset)
                    ]
            else:
                entry["records"] = b""
            parts_out.append(entry)
        topics_out.append({"topic": name, "topic_id": t.get("topic_id"), "partitions": parts_out})
    return topics_out, total, read


@api(1, "Fetch", 0, 12)
async def fetch(ctx: Context, req: Body) -> Body:
    state = ctx.state
    deadline = time.monotonic() + max(req["max_wait_ms"], 0) / 1000
    min_bytes = max(req["min_bytes"], 0)
    while True:
        topics, total, read = _read_all(state, req, ctx.version)
        remaining = deadline - time.monotonic()
        has_error = any(p["error_code"] != 0 for t in topics for p in t["partitions"])
        if total >= max(min_bytes, 1) or remaining <= 0 or has_error:
            break
        await state.wait_for_append(read, remaining)
    if ctx.version < 4:
        down_convert_responses(topics, req, ctx.version)
    return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": topics}
