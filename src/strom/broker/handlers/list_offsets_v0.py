"""ListOffsets v0: the pre-0.10.1 "offsets before a time" answer, a list of segment boundaries.

v0 does not look records up by timestamp. Kafka (up to 3.9) answers it from the log's segments:
each segment contributes its base offset (at least the log start offset) stamped with its file's
last-modified time, and a non-empty active segment adds the log end offset stamped "now". Given
the request's time ``t``, the answer lists, newest first, at most ``max_num_offsets`` of those
offsets from the newest entry stamped at or before ``t`` downwards: latest (-1) starts from the
newest entry, earliest (-2) from the oldest. Other negative times are ``UNSUPPORTED_VERSION``.

So ``(-1, 1)`` is ``[log end offset]`` and ``(-2, 1)`` is ``[log start offset]``, what clients of
that era ask for. A single node's high watermark is its log end offset, so Kafka's clamp of
consumer answers to the high watermark changes nothing here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from strom.broker.handlers.base import Body
from strom.broker.log import PartitionLog
from strom.broker.log.segment import segment_name
from strom.broker.state import BrokerState
from strom.kafka.protocol.errors import ErrorCode

__all__ = ["list_offsets_v0", "offsets_before"]

_LATEST = -1
_EARLIEST = -2


def offsets_before(
    entries: Sequence[tuple[int, int]], timestamp: int, max_offsets: int
) -> list[int]:
    """Kafka's legacy answer over ``entries``: (offset, time) pairs in log order. Pure."""
    if timestamp == _LATEST:
        start = len(entries) - 1
    elif timestamp == _EARLIEST:
        start = 0 if entries else -1
    else:
        start = len(entries) - 1
        while start >= 0 and entries[start][1] > timestamp:
            start -= 1
    count = max(min(max_offsets, start + 1), 0)
    return sorted((entries[start - j][0] for j in range(count)), reverse=True)


def _segment_entries(plog: PartitionLog) -> list[tuple[int, int]]:
    start, end = plog.log_start_offset, plog.log_end_offset
    bases = plog.segment_base_offsets
    entries = []
    for base in bases:
        try:
            mtime = os.stat(plog.directory / segment_name(base, ".log")).st_mtime_ns // 1_000_000
        except FileNotFoundError:
            continue  # deleted by retention since the list was taken
        entries.append((max(base, start), mtime))
    if bases and end > bases[-1]:
        entries.append((end, int(time.time() * 1000)))
    return entries


def _answer(index: int, code: ErrorCode, offsets: list[int] | None = None) -> dict[str, Any]:
    return {"partition_index": index, "error_code": int(code), "old_style_offsets": offsets or []}


def list_offsets_v0(state: BrokerState, req: Body) -> Body:
    """The whole ListOffsets v0 response body."""
    known = state.logs.topics()
    topics = []
    for t in req["topics"]:
        info = known.get(t["name"])
        parts = []
        for p in t["partitions"]:
            index, ts = p["partition_index"], p["timestamp"]
            if info is None or not 0 <= index < info.partitions:
                parts.append(_answer(index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
            elif ts < _EARLIEST:
                parts.append(_answer(index, ErrorCode.UNSUPPORTED_VERSION))
            else:
                entries = _segment_entries(state.logs.partition(info.name, index))
                found = offsets_before(entries, ts, p["max_num_offsets"])
                parts.append(_answer(index, ErrorCode.NONE, found))
        topics.append({"name": t["name"], "partitions": parts})
    return {"topics": topics}
