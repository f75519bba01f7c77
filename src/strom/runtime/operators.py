"""Streaming operators: push-based, one micro-batch at a time.

Two messages flow from sources to sinks: ``on_batch(partition, batch)`` and
``on_progress(partition, max_event_time, now_ms, finished)``, the latter after every poll of a
source partition. Stateless operators transform batches and forward progress untouched; window
operators turn progress into watermarks.

A third, ``on_segments(batch, runs)``, carries one round's batches of several partitions as one
batch: ``runs`` lists ``(partition, rows)`` for its consecutive rows, in partition order. The
executor sends it only where every operator downstream takes it (see
:func:`strom.runtime.executor._segment_downstream`): pass-throughs and transforms forward it
(keeping the runs exact), operators that ignore partitions take it as one batch, and windows
take each partition's rows as having arrived just before that partition's progress message, so
event time and lateness are judged exactly as for separate batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from strom.engine.contracts import Metrics, MetricsProvider, OperatorState, Sink, StatefulSink
from strom.engine.transforms import compile_transform
from strom.pipeline.plan import (
    FilterNode,
    SelectNode,
    StatelessNode,
    WithColumnsNode,
)

#: ``(partition, rows)`` per run of consecutive rows of one partition in a merged batch
Runs = list[tuple[int, int]]


def split_runs(batch: pl.DataFrame, runs: Runs) -> list[tuple[int, pl.DataFrame]]:
    """The rows of each run as ``(partition, slice)`` (empty runs left out)."""
    out: list[tuple[int, pl.DataFrame]] = []
    at = 0
    for partition, rows in runs:
        if rows:
            out.append((partition, batch.slice(at, rows)))
        at += rows
    return out


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

    def on_segments(self, batch: pl.DataFrame, runs: Runs) -> None:
        """Rows of several partitions (see the module docstring); a pass-through forwards them."""
        self.counters.rows_in += batch.height
        self.emit_segments(batch, runs)

    def emit_segments(self, batch: pl.DataFrame, runs: Runs) -> None:
        self.counters.rows_out += batch.height
        for out in self.outputs:
            out.on_segments(batch, runs)

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

    def on_segments(self, batch: pl.DataFrame, runs: Runs) -> None:
        """The transform over the merged batch, its runs recounted: a filter's from its mask,
        a row-preserving step's unchanged. Anything else (a per-record map, a user function, a
        step changing the row count) runs once per run, as it would on separate batches."""
        self.counters.rows_in += batch.height
        node = self.node
        if isinstance(node, FilterNode):
            mask = batch.select(node.predicate).to_series()
            if mask.dtype == pl.Boolean and mask.len() == batch.height:
                if mask.null_count():
                    mask = mask.fill_null(False)
                keep = mask.to_numpy()
                if keep.all():
                    self.emit_segments(batch, runs)
                    return
                starts = np.cumsum([0, *(rows for _, rows in runs[:-1])])
                counts = np.add.reduceat(keep.astype(np.int64), starts).tolist()
                kept = [(p, int(n)) for (p, _), n in zip(runs, counts, strict=True) if n]
                self.emit_segments(batch.filter(mask), kept)
                return
        elif isinstance(node, WithColumnsNode | SelectNode):
            out = self._apply(batch)
            if out.height == batch.height:
                self.emit_segments(out, runs)
                return
        for partition, part in split_runs(batch, runs):
            out = self._apply(part)
            self.emit_segments(out, [(partition, out.height)])


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

    def on_segments(self, batch: pl.DataFrame, runs: Runs) -> None:
        """One batch: a sink ignores partitions."""
        self.on_batch(runs[0][0], batch)

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
