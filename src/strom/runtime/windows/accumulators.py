"""Incremental aggregation: batch partials computed by Polars, merged into plain Python state.

An accumulator is a flat ``list`` of slot values, laid out per aggregation:

- ``count``: ``[n]``;  ``sum``/``mean``: ``[sum, non_null_count]``;  ``min``/``max``: ``[value]``
- ``first``/``last``: ``[event_time, partition, seq, value]`` (the order key, then the value)
- ``var``/``std``: ``[n, mean, M2]`` (merged by Chan et al.'s parallel formula)
- ``count_distinct``: ``[set of values]``;  ``approx_count_distinct``: ``[{register: rank}]``
- ``approx_quantile``: ``[[(priority, value), ...]]`` (see :mod:`strom.runtime.windows.sketches`)

Partials from one batch share that layout, except ``first``/``last`` partials lack ``partition``
(a batch comes from one partition) and sketches arrive as lists; :meth:`Accumulators.from_partial`
converts them.
Merging is associative and commutative, so merge order never changes a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from strom.pipeline.agg import Agg
from strom.runtime.windows import sketches

TS = "__strom_ts"
SEQ = "__strom_seq"
PART = "__strom_part"

_WIDTH = {
    "count": 1,
    "sum": 2,
    "mean": 2,
    "min": 1,
    "max": 1,
    "first": 4,
    "last": 4,
    "var": 3,
    "std": 3,
    "count_distinct": 1,
    "approx_count_distinct": 1,
    "approx_quantile": 1,
}


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
        within each group when :attr:`needs_order`, and carry ``PART`` for sketches."""
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
            elif a.kind in ("var", "std"):
                assert col is not None
                x = col.cast(pl.Float64)
                exprs += [
                    x.count().alias(name + "n"),
                    x.mean().alias(name + "m"),
                    ((x - x.mean()) ** 2).sum().alias(name + "m2"),
                ]
            elif a.kind == "count_distinct":
                assert col is not None
                exprs.append(col.drop_nulls().unique().alias(name + "d"))
            elif a.kind == "approx_count_distinct":
                assert col is not None
                exprs.append(sketches.hll_codes(col).alias(name + "h"))
            elif a.kind == "approx_quantile":
                assert col is not None
                prio = sketches.sample_priority(pl.col(PART), pl.col(SEQ))
                p, v = sketches.sample_exprs(col, prio)
                exprs += [p.alias(name + "p"), v.alias(name + "v")]
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
            elif a.kind in ("var", "std"):
                n = values[i]
                acc += [n, values[i + 1] or 0.0, values[i + 2] or 0.0] if n else [0, 0.0, 0.0]
                i += 3
            elif a.kind == "count_distinct":
                acc.append(set(values[i]))
                i += 1
            elif a.kind == "approx_count_distinct":
                acc.append(sketches.hll_from_codes(values[i]))
                i += 1
            elif a.kind == "approx_quantile":
                acc.append(sketches.sample_from(values[i], values[i + 1]))
                i += 2
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
            elif a.kind in ("var", "std"):
                into[o : o + 3] = _merge_moments(into[o : o + 3], other[o : o + 3])
            elif a.kind == "count_distinct":
                into[o] |= other[o]
            elif a.kind == "approx_count_distinct":
                sketches.hll_merge(into[o], other[o])
            elif a.kind == "approx_quantile":
                sketches.sample_merge(into[o], other[o])
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
            elif a.kind in ("var", "std"):
                out.append(finalize_moments(a.kind, acc[o], acc[o + 2]))
            elif a.kind == "count_distinct":
                out.append(len(acc[o]))
            elif a.kind == "approx_count_distinct":
                out.append(sketches.hll_estimate(acc[o]))
            elif a.kind == "approx_quantile":
                assert a.q is not None
                out.append(sketches.sample_quantile(acc[o], a.q))
            else:
                out.append(acc[o + 3])
        return out


def _merge_moments(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    if not n_b:
        return list(a)
    if not n_a:
        return list(b)
    n = n_a + n_b
    delta = mean_b - mean_a
    return [n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n]


def finalize_moments(kind: str, n: int, m2: float) -> float | None:
    """Sample variance (or its square root) from a count and sum of squared deviations."""
    if n < 2:
        return None
    variance = max(m2, 0.0) / (n - 1)
    return variance**0.5 if kind == "std" else variance


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
