"""Streaming operators: push-based, one micro-batch at a time.

Two messages flow from sources to sinks: ``on_batch(partition, batch)`` and
``on_progress(partition, max_event_time, now_ms, finished)``, the latter after every poll of a
source partition. Stateless operators transform batches and forward progress untouched; window
operators turn progress into watermarks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from strom.engine.contracts import Metrics, MetricsProvider, Sink
from strom.pipeline.plan import (
    FilterNode,
    MapBatchesNode,
    MapNode,
    Node,
    SelectNode,
    WithColumnsNode,
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

    def open(self) -> None:
        """Called once before the first message."""

    def close(self) -> None:
        """Called once after the last message."""


class TransformOperator(Operator):
    """Filter, with_columns, select, map_batches, map and flat_map: a function of each batch."""

    def __init__(self, name: str, node: Node) -> None:
        super().__init__(name)
        self.node = node

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        self.emit(partition, apply_transform(self.node, batch))


def apply_transform(node: Node, batch: pl.DataFrame) -> pl.DataFrame:
    """Apply a stateless plan node to one batch (shared with the bounded runner)."""
    if isinstance(node, FilterNode):
        return batch.filter(node.predicate)
    if isinstance(node, WithColumnsNode):
        return batch.with_columns(*node.exprs)
    if isinstance(node, SelectNode):
        return batch.select(*node.exprs)
    if isinstance(node, MapBatchesNode):
        result = node.fn(batch)
        if not isinstance(result, pl.DataFrame):
            raise TypeError(
                f"map_batches function {node.fn!r} returned {type(result).__name__}, "
                "not a polars DataFrame"
            )
        return result
    if isinstance(node, MapNode):
        return apply_map(node, batch)
    raise TypeError(f"{node.label} is not a stateless transformation")


def apply_map(node: MapNode, batch: pl.DataFrame) -> pl.DataFrame:
    """Run a per-record ``map``/``flat_map`` over one batch, keeping row order."""
    out: list[Mapping[str, Any]] = []
    if node.flat:
        for row in batch.iter_rows(named=True):
            out.extend(node.fn(row))  # type: ignore[arg-type]
    else:
        out = [node.fn(row) for row in batch.iter_rows(named=True)]  # type: ignore[misc]
    return rows_to_frame(out, node.schema, "flat_map" if node.flat else "map")


def rows_to_frame(rows: Sequence[Mapping[str, Any]], schema: pl.Schema, where: str) -> pl.DataFrame:
    """Rows (dicts) as a frame of ``schema``: missing columns are null, extra keys an error."""
    names = set(schema)
    for row in rows:
        if not isinstance(row, Mapping):
            raise TypeError(f"{where}: output rows must be dicts, got {row!r}")
        extra = row.keys() - names
        if extra:
            raise ValueError(
                f"{where}: output row has columns {sorted(extra)} not in output_schema "
                f"{list(schema)}"
            )
    try:
        return pl.DataFrame(rows, schema=schema)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise ValueError(
            f"{where}: output rows do not fit output_schema {dict(schema)}: {exc}"
        ) from exc


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
