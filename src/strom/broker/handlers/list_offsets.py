"""ListOffsets: earliest (-2), latest (-1), max timestamp (-3) and by timestamp; v0 apart."""

from __future__ import annotations

from typing import Any

from strom.broker.handlers.base import Body, Context, api
from strom.broker.handlers.list_offsets_v0 import list_offsets_v0
from strom.kafka.protocol.errors import ErrorCode

EARLIEST = -2
LATEST = -1
MAX_TIMESTAMP = -3


def _answer(index: int, code: ErrorCode, offset: int = -1, timestamp: int = -1) -> dict[str, Any]:
    return {
        "partition_index": index,
        "error_code": int(code),
        "old_style_offsets": [],
        "timestamp": timestamp,
        "offset": offset,
        "leader_epoch": 0 if code is ErrorCode.NONE else -1,
    }


@api(2, "ListOffsets", 0, 7)
async def list_offsets(ctx: Context, req: Body) -> Body:
    if ctx.version == 0:
        return list_offsets_v0(ctx.state, req)
    state = ctx.state
    # read_committed (isolation level 1): "latest" is the last stable offset, and a lookup by
    # timestamp (or max timestamp) at or past it finds nothing, as in Kafka
    committed = req.get("isolation_level", 0) == 1
    known = state.logs.topics()
    topics = []
    for t in req["topics"]:
        info = known.get(t["name"])
        parts = []
        for p in t["partitions"]:
            index = p["partition_index"]
            if info is None or not 0 <= index < info.partitions:
                parts.append(_answer(index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            plog = state.logs.partition(info.name, index)
            readable = plog.last_stable_offset if committed else plog.log_end_offset
            ts = p["timestamp"]
            if ts == EARLIEST:
                parts.append(_answer(index, ErrorCode.NONE, plog.log_start_offset))
            elif ts == LATEST:
                parts.append(_answer(index, ErrorCode.NONE, readable))
            elif ts == MAX_TIMESTAMP:
                found = plog.max_timestamp_offset()
                if found is None or found[0] >= readable:
                    parts.append(_answer(index, ErrorCode.NONE))
                else:
                    parts.append(_answer(index, ErrorCode.NONE, found[0], found[1]))
            elif ts < 0:
                parts.append(_answer(index, ErrorCode.INVALID_REQUEST))
            else:
                found = plog.offset_for_timestamp(ts)
                if found is None or found[0] >= readable:
                    parts.append(_answer(index, ErrorCode.NONE))
                else:
                    parts.append(_answer(index, ErrorCode.NONE, found[0], found[1]))
        topics.append({"name": t["name"], "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}
