"""Watermarks: per source partition, combined by minimum, idle partitions excluded.

A watermark ``W`` asserts that every event with event time ``< W`` has arrived. A partition's
watermark is ``max event time seen - max_out_of_orderness`` (nothing seen: :data:`MIN_WATERMARK`).
The combined watermark is the minimum over partitions that are neither finished nor idle; it
never decreases. A window ``[start, end)`` is complete once ``W >= end``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from strom.engine.constants import MAX_WATERMARK, MIN_WATERMARK
from strom.engine.contracts import StateError

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "WatermarkTracker",
    "combine_watermarks",
    "partition_watermark",
]


def partition_watermark(max_event_time: int | None, max_out_of_orderness_ms: int) -> int:
    """The watermark of one partition given the largest event time it has delivered."""
    if max_event_time is None:
        return MIN_WATERMARK
    return max_event_time - max_out_of_orderness_ms


def combine_watermarks(partitions: Iterable[tuple[int, bool, bool]], previous: int) -> int:
    """Combine ``(watermark, idle, finished)`` per partition into the new combined watermark.

    - Finished partitions never hold the watermark back; when all are finished it is the maximum.
    - Idle partitions are excluded; if every unfinished partition is idle, it stays where it was.
    - The result is never below ``previous`` (watermarks are monotone).
    """
    active: list[int] = []
    any_unfinished = False
    for watermark, idle, finished in partitions:
        if finished:
            continue
        any_unfinished = True
        if not idle:
            active.append(watermark)
    if not any_unfinished:
        return MAX_WATERMARK
    if not active:
        return previous
    return max(previous, min(active))


@dataclass
class _PartitionClock:
    out_of_orderness_ms: int
    idle_timeout_ms: int | None
    max_event_time: int | None = None
    last_data_ms: float = 0.0
    finished: bool = False


class WatermarkTracker:
    """The combined watermark over a fixed set of source partitions (by global index).

    :meth:`snapshot` / :meth:`restore` round-trip its state as JSON (part of each operator's).
    """

    def __init__(self, partitions: dict[int, tuple[int, int | None]], now_ms: float) -> None:
        """``partitions`` maps a global partition index to (out-of-orderness, idle timeout)."""
        self._clocks = {
            p: _PartitionClock(ooo, idle, last_data_ms=now_ms)
            for p, (ooo, idle) in partitions.items()
        }
        self.current = MIN_WATERMARK

    def bounds(self) -> dict[int, int]:
        """Each partition's out-of-orderness bound (ms), by global index."""
        return {p: c.out_of_orderness_ms for p, c in self._clocks.items()}

    def observe(self, partition: int, max_event_time: int | None, now_ms: float) -> None:
        """Partition ``partition`` delivered data whose largest event time is ``max_event_time``
        (``None``: a batch with no rows, or no batch at all, which does not count as activity)."""
        clock = self._clocks[partition]
        if max_event_time is not None:
            clock.last_data_ms = now_ms
            if clock.max_event_time is None or max_event_time > clock.max_event_time:
                clock.max_event_time = max_event_time

    def finish(self, partition: int) -> None:
        self._clocks[partition].finished = True

    def progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> tuple[int, int]:
        """One progress message from ``partition`` (see :meth:`observe`; ``finished``: it has
        ended): returns the combined watermark before and after it."""
        self.observe(partition, max_event_time, now_ms)
        if finished:
            self.finish(partition)
        before = self.current
        return before, self.advance(now_ms)

    def advance(self, now_ms: float) -> int:
        """Recompute and return the combined watermark at processing time ``now_ms``."""
        self.current = combine_watermarks(
            (
                (
                    partition_watermark(c.max_event_time, c.out_of_orderness_ms),
                    c.idle_timeout_ms is not None and now_ms - c.last_data_ms >= c.idle_timeout_ms,
                    c.finished,
                )
                for c in self._clocks.values()
            ),
            self.current,
        )
        return self.current

    def idle(self, now_ms: float) -> bool:
        """Every unfinished partition is idle (and one is unfinished): :meth:`advance` holds the
        watermark where it is, and a consumer merging this stream with others may ignore it
        until it delivers again (what a repartition writer reports downstream)."""
        unfinished = [c for c in self._clocks.values() if not c.finished]
        return bool(unfinished) and all(
            c.idle_timeout_ms is not None and now_ms - c.last_data_ms >= c.idle_timeout_ms
            for c in unfinished
        )

    def snapshot(self) -> dict[str, Any]:
        """The tracker's state as JSON: the combined watermark and, per partition, the largest
        event time seen, the processing time of its last data and whether it has ended."""
        return {
            "current": self.current,
            "partitions": [
                [p, c.max_event_time, c.last_data_ms, c.finished] for p, c in self._clocks.items()
            ],
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot` of a tracker over the same partitions.

        ``last_data_ms`` is a value of the snapshotting executor's clock: an executor restoring
        it into another process (another clock origin) calls :meth:`rebase_clock` after this."""
        partitions = {
            int(p): (max_ts, last, finished) for p, max_ts, last, finished in snapshot["partitions"]
        }
        if partitions.keys() != self._clocks.keys():
            raise StateError(
                f"watermark state of partitions {sorted(partitions)}, but this operator reads "
                f"partitions {sorted(self._clocks)} (a state of another pipeline)"
            )
        self.current = int(snapshot["current"])
        for p, (max_ts, last, finished) in partitions.items():
            clock = self._clocks[p]
            clock.max_event_time = None if max_ts is None else int(max_ts)
            clock.last_data_ms, clock.finished = float(last), bool(finished)

    def rebase_clock(self, shift_ms: float) -> None:
        """Move every processing-time value by ``shift_ms`` (a restored state's clock values
        into the restoring executor's clock: each partition's time since its last data is kept,
        less any time the caller says elapsed in between)."""
        for clock in self._clocks.values():
            clock.last_data_ms += shift_ms
