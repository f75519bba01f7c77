"""Retention decisions as pure functions of segment statistics (no I/O).

Deletion always removes a prefix of the segment list, never the active (last) segment: the log
stays one contiguous offset range and its start moves to the first kept segment's base offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SegmentStats", "segments_to_delete"]


@dataclass(frozen=True, slots=True)
class SegmentStats:
    """What retention needs to know about one segment."""

    base_offset: int
    size_bytes: int
    largest_timestamp_ms: int  # max record timestamp, or file mtime when records carry none


def segments_to_delete(
    segments: Sequence[SegmentStats], now_ms: int, retention_ms: int, retention_bytes: int
) -> int:
    """How many of the oldest ``segments`` (ordered by base offset) to delete.

    By time (``retention_ms`` >= 0): the longest prefix of segments whose largest timestamp is
    more than ``retention_ms`` old. By size (``retention_bytes`` >= 0): the longest prefix whose
    removal still leaves at least ``retention_bytes`` in the log. The result is the larger of the
    two, and at most ``len(segments) - 1``. -1 disables a limit.
    """
    deletable = len(segments) - 1
    if deletable <= 0:
        return 0
    by_time = 0
    if retention_ms >= 0:
        while (
            by_time < deletable and now_ms - segments[by_time].largest_timestamp_ms > retention_ms
        ):
            by_time += 1
    by_size = 0
    if retention_bytes >= 0:
        excess = sum(s.size_bytes for s in segments) - retention_bytes
        while by_size < deletable and excess >= segments[by_size].size_bytes:
            excess -= segments[by_size].size_bytes
            by_size += 1
    return max(by_time, by_size)
