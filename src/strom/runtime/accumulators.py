"""Incremental aggregation: batch partials computed by Polars, merged into plain Python state.

An accumulator is a flat ``list`` of slot values, laid out per aggregation:

- ``count``: ``[n]``;  ``sum``/``mean``: ``[sum, non_null_count]``;  ``min``/``max``: ``[value]``
- ``first``/``last``: ``[event_time, partition, seq, value]`` (the order key, then the value)

Partials from one batch share that layout, except ``first``/``last`` partials lack ``partition``
(a batch comes from one partition); :meth:`Accumulators.from_partial` inserts it.
Merging is associative and commutative, so merge order never changes a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from strom.pipeline.agg import Agg

TS = "__strom_ts"
SEQ = "__strom_seq"
PART = "__strom_part"

_WIDTH = {"count": 1, "sum": 2, "mean": 2, "min": 1, "max": 1, "first": 4, "last": 4}


class Accumulators:
    """The slot layout and merge/finalize rules for one window's aggregations."""

    def __init__(self, aggs: Sequence[Agg]) -> None:
        self.aggs = tuple(aggs)
        self.needs_order = any(a.kind in ("first", "last") for a in self.aggs)
        self._offsets: list[int] = []
        width = 0
        for a in self.aggs:
            self._offsets.append(width)
            width += _WIDTH[a.kind]
        self.width = width

    def partial_exprs(self) -> list[pl.Expr]:
        """Group-by expressions producing a batch's partials; rows must be in (ts, seq) order
        within each group when :attr:`needs_order`."""
        exprs: list[pl.Expr] = []
        for i, a in enumerate(self.aggs):
            col = pl.col(a.column) if a.column is not None else None
            name = f"__p{i}_"
            if a.kind == "count":
                exprs.append((pl.len() if col is None else col.count()).alias(name + "n"))
            elif a.kind in ("sum", "mean"):
                assert col is not None
                exprs += [col.sum().alias(name + "s"), col.count().alias(name + "n")]
            elif a.kind in ("min", "max"):
                assert col is not None
                exprs.append((col.min() if a.kind == "min" else col.max()).alias(name + "v"))
            else:
                assert col is not None
                exprs += [
                    _pick(a.kind, pl.col(TS)).alias(name + "t"),
                    _pick(a.kind, pl.col(SEQ)).alias(name + "q"),
                    _pick(a.kind, col).alias(name + "v"),
                ]
        return exprs

    def from_partial(self, values: Sequence[Any], partition: int) -> list[Any]:
        """An accumulator from one row of :meth:`partial_exprs` output (those columns only)."""
        acc: list[Any] = []
        i = 0
        for a in self.aggs:
            if a.kind in ("first", "last"):
                acc += [values[i], partition, values[i + 1], values[i + 2]]
                i += 3
            else:
                width = _WIDTH[a.kind]
                acc += values[i : i + width]
                i += width
        return acc

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        """Fold ``other`` into ``into`` in place."""
        for a, o in zip(self.aggs, self._offsets, strict=True):
            if a.kind == "count":
                into[o] += other[o]
            elif a.kind in ("sum", "mean"):
                into[o] += other[o]
                into[o + 1] += other[o + 1]
            elif a.kind in ("min", "max"):
                x, y = into[o], other[o]
                if x is None or (y is not None and (y < x if a.kind == "min" else y > x)):
                    into[o] = y
            else:
                mine, theirs = tuple(into[o : o + 3]), tuple(other[o : o + 3])
                if (theirs < mine) if a.kind == "first" else (theirs > mine):
                    into[o : o + 4] = other[o : o + 4]

    def finalize(self, acc: Sequence[Any]) -> list[Any]:
        """The output value of each aggregation."""
        out: list[Any] = []
        for a, o in zip(self.aggs, self._offsets, strict=True):
            if a.kind == "count":
                out.append(acc[o])
            elif a.kind == "sum":
                out.append(acc[o] if acc[o + 1] else None)
            elif a.kind == "mean":
                out.append(acc[o] / acc[o + 1] if acc[o + 1] else None)
            elif a.kind in ("min", "max"):
                out.append(acc[o])
            else:
                out.append(acc[o + 3])
        return out


def _pick(kind: str, expr: pl.Expr) -> pl.Expr:
    return expr.first() if kind == "first" else expr.last()


def output_schema(keys: Sequence[str], aggs: Sequence[Agg], input_schema: pl.Schema) -> pl.Schema:
    """The schema of window results for inputs of ``input_schema``."""
    fields: dict[str, pl.DataType] = {k: input_schema[k] for k in keys}
    fields["window_start"] = pl.Int64()
    fields["window_end"] = pl.Int64()
    for a in aggs:
        fields[a.name] = a.output_dtype(input_schema[a.column] if a.column else None)
    fields["is_update"] = pl.Boolean()
    return pl.Schema(fields)
