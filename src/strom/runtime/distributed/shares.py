"""A worker's share of a source (``p % N == i``), observed for its cuts' watermarks."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from strom.engine.contracts import (
    END_OF_PARTITION,
    Metrics,
    MetricsProvider,
    PollResult,
    Position,
    SideOutputs,
    Sink,
    Source,
    SourcePartition,
    WaitingSource,
)
from strom.pipeline.windows import event_time_ms
from strom.runtime.distributed.repartition import EmptyShare, Observer
from strom.runtime.watermarks import WatermarkTracker

__all__ = ["ProgressFeed", "SharedSource"]

Clock = Callable[[], float]


class ProgressFeed:
    """Per worker: feeds each cut's tracker with what the readers upstream of it deliver."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._subscribers: dict[str, list[tuple[WatermarkTracker, int]]] = {}

    def observer(self, source: str) -> Observer:
        subscribers = self._subscribers.setdefault(source, [])

        def observe(partition: int, max_event_time: int | None, finished: bool) -> None:
            now = self.clock()
            for tracker, offset in subscribers:
                tracker.observe(offset + partition, max_event_time, now)
                if finished:
                    tracker.finish(offset + partition)

        return observe

    def subscribe(self, source: str, tracker: WatermarkTracker, offset: int) -> None:
        self._subscribers.setdefault(source, []).append((tracker, offset))


class SharedSource:
    """Worker ``index``'s share of ``source``: its partitions ``p % workers == index`` (one that
    ends at once if it has none, so a plan always has a partition per source). Positions,
    seeks, metrics and side sinks are the inner source's."""

    def __init__(
        self, source: Source, partitions: list[int], timestamp: str | None, observer: Observer
    ) -> None:
        self.source = source
        self.partitions = partitions
        self._timestamp = timestamp
        self._observer = observer
        self._readers: list[_Observed] = []

    def schema(self) -> pl.Schema | None:
        return self.source.schema()

    def partition_count(self) -> int:
        return max(1, len(self.partitions))

    def open_partition(self, index: int) -> SourcePartition:
        if not self.partitions:
            return EmptyShare(index, self._observer)
        inner = self.source.open_partition(self.partitions[index])
        reader = _Observed(index, inner, self._timestamp, self._observer)
        self._readers.append(reader)
        return reader

    def wait(self, timeout_s: float) -> bool:
        """The shared source's own wait (``WaitingSource``); False at once if it has none."""
        if isinstance(self.source, WaitingSource):
            return self.source.wait(timeout_s)
        return False

    def close(self) -> None:
        self.source.close()

    def metrics(self) -> Metrics:
        if isinstance(self.source, MetricsProvider):
            return self.source.metrics()
        rows = sum(r.rows for r in self._readers)
        return Metrics(rows_in=rows, rows_out=rows)

    def side_sinks(self) -> list[Sink]:
        return list(self.source.side_sinks()) if isinstance(self.source, SideOutputs) else []


class _Observed:
    def __init__(
        self, index: int, inner: SourcePartition, timestamp: str | None, observer: Observer
    ) -> None:
        self._index = index
        self._inner = inner
        self._timestamp = timestamp
        self._observer = observer
        self.rows = 0

    def position(self) -> Position:
        return self._inner.position()

    def seek(self, position: Position) -> None:
        self._inner.seek(position)

    def poll(self) -> PollResult:
        item = self._inner.poll()
        if item is END_OF_PARTITION:
            self._observer(self._index, None, True)
            return item
        max_ts = None
        if isinstance(item, pl.DataFrame):
            self.rows += item.height
        if isinstance(item, pl.DataFrame) and item.height and self._timestamp is not None:
            ts = self._timestamp
            value = item.select(event_time_ms(ts, item.schema[ts]).max()).item()
            max_ts = None if value is None else int(value)
        self._observer(self._index, max_ts, False)
        return item
