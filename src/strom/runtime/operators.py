"""Streaming operators: push-based, one micro-batch at a time.

Two messages flow from sources to sinks: ``on_batch(partition, batch)`` and
``on_progress(partition, max_event_time, now_ms, finished)``, the latter after every poll of a
source partition. Stateless operators transform batches and forward progress untouched; window
operators turn progress into watermarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from strom.engine.contracts import Metrics, MetricsProvider, OperatorState, Sink, StatefulSink
from strom.engine.transforms import compile_transform
from strom.pipeline.plan import (
    StatelessNode,
)


@dataclass
class Counters:
    """An operator's running counts; :meth:`Operator.metrics` reports them."""

    rows_in: int = 0
    rows_out: int = 0
    late_rows: int = 0
    #: None for operators without event time of their own (stateless ones)
    watermark: int | None = None


class Operator:
    """Base operator: forwards everything to :attr:`outputs`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.outputs: list[Operator] = []
        self.counters = Counters()

    def metrics(self) -> Metrics:
        """The counters now, and the state size (counting it may walk the state)."""
        c = self.counters
        return Metrics(
            rows_in=c.rows_in,
            rows_out=c.rows_out,
            late_rows=c.late_rows,
            watermark=c.watermark,
            state_size=self.state_size(),
        )

    def state_size(self) -> int | None:
        """Entries held (None: the operator holds nothing)."""
        return None

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        self.emit(partition, batch)

    def emit(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_out += batch.height
        for out in self.outputs:
            out.on_batch(partition, batch)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        for out in self.outputs:
            out.on_progress(partition, max_event_time, now_ms, finished)

    def rebase_clock(self, shift_ms: float) -> None:
        """A restored state's processing-time values move by ``shift_ms`` into this executor's
        clock (see :meth:`StreamingExecutor.restore`); nothing to move by default."""

    def open(self) -> None:
        """Called once before the first message."""

    def close(self) -> None:
        """Called once after the last message."""


class TransformOperator(Operator):
    """Filter, with_columns, select, map_batches, map and flat_map: a function of each batch."""

    def __init__(self, name: str, node: StatelessNode) -> None:
        super().__init__(name)
        self.node = node
        self._apply = compile_transform(node)

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        self.emit(partition, self._apply(batch))


class SinkOperator(Operator):
    """Writes every non-empty batch to its sink; opens and closes it with the run."""

    def __init__(self, name: str, sink: Sink) -> None:
        super().__init__(name)
        self.sink = sink

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        if batch.height:
            self.sink.write(batch)
            self.counters.rows_out += batch.height

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        pass

    def open(self) -> None:
        self.sink.open()

    def close(self) -> None:
        self.sink.close()

    def metrics(self) -> Metrics:
        """The sink's own metrics if it reports them (it knows what it has written), else the
        rows this operator handed it."""
        if isinstance(self.sink, MetricsProvider):
            return self.sink.metrics()
        return super().metrics()


class StatefulSinkOperator(SinkOperator):
    """The operator of a :class:`~strom.engine.contracts.StatefulSink`: a stateful operator
    whose state is the sink's (so snapshots and checkpoints keep it)."""

    def __init__(self, name: str, sink: Sink) -> None:
        super().__init__(name, sink)
        assert isinstance(sink, StatefulSink)
        self.stateful: StatefulSink = sink

    def snapshot(self) -> OperatorState:
        return self.stateful.snapshot_state()

    def restore(self, state: OperatorState) -> None:
        self.stateful.restore_state(state)

    def state_size(self) -> int:
        return 0

    def rebase_clock(self, shift_ms: float) -> None:
        self.stateful.rebase_clock(shift_ms)
