"""Streaming operators: push-based, one micro-batch at a time.

Two messages flow from sources to sinks: ``on_batch(partition, batch)`` and
``on_progress(partition, max_event_time, now_ms, finished)``, the latter after every poll of a
source partition. Stateless operators transform batches and forward progress untouched; window
operators turn progress into watermarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from strom.engine.transforms import apply_transform
from strom.pipeline.io import Sink
from strom.pipeline.plan import StatelessNode
from strom.runtime.watermarks import MIN_WATERMARK


@dataclass
class OperatorMetrics:
    """A snapshot of one operator's counters."""

    name: str
    records_in: int = 0
    records_out: int = 0
    late_records: int = 0
    watermark: int = MIN_WATERMARK
    #: Filled in when read through ``StreamingExecutor.metrics()`` (counting some operators'
    #: state walks all of it, so it is not kept up to date on every watermark advance).
    state_size: int = 0


class Operator:
    """Base operator: forwards everything to :attr:`outputs`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.outputs: list[Operator] = []
        self.metrics = OperatorMetrics(name)

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.metrics.records_in += batch.height
        self.emit(partition, batch)

    def emit(self, partition: int, batch: pl.DataFrame) -> None:
        self.metrics.records_out += batch.height
        for out in self.outputs:
            out.on_batch(partition, batch)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        for out in self.outputs:
            out.on_progress(partition, max_event_time, now_ms, finished)

    def open(self) -> None:
        """Called once before the first message."""

    def close(self) -> None:
        """Called once after the last message."""


class TransformOperator(Operator):
    """Filter, with_columns, select, map_batches, map and flat_map: a function of each batch."""

    def __init__(self, name: str, node: StatelessNode) -> None:
        super().__init__(name)
        self.node = node

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.metrics.records_in += batch.height
        self.emit(partition, apply_transform(self.node, batch))


class SinkOperator(Operator):
    """Writes every non-empty batch to its sink; opens and closes it with the run."""

    def __init__(self, name: str, sink: Sink) -> None:
        super().__init__(name)
        self.sink = sink

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.metrics.records_in += batch.height
        if batch.height:
            self.sink.write(batch)
            self.metrics.records_out += batch.height

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        pass

    def open(self) -> None:
        self.sink.open()

    def close(self) -> None:
        self.sink.close()
