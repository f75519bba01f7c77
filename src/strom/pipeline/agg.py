"""Aggregations over windows: ``agg.count()``, ``agg.mean("temp")`` …

Each aggregation names its output column (``count``, ``count_x``, ``sum_x``, ``mean_temp`` …) and
fixes its output type from the input column's type, so every executor produces the same schema.

Semantics (identical in every executor):

- ``count()`` counts events; ``count(col)`` counts non-null values of ``col``.
- ``sum``, ``min``, ``max``, ``mean`` ignore nulls and are null when a window has no non-null value.
- ``first``/``last`` take the value (null included) of the earliest/latest event by event time;
  ties are broken by source partition index, then by position within that partition's stream.
- ``var``/``std`` are the sample variance / standard deviation (SQL ``var_samp``/``stddev_samp``)
  of non-null values, null with fewer than two. Streaming merges (count, mean, M2) partials, so
  they may differ from the bounded runner's in the last bits.
- ``count_distinct`` counts distinct non-null values exactly (state: the set of values).
- ``approx_count_distinct`` and ``approx_quantile`` are mergeable sketches with documented error
  (see ``strom.runtime.windows.sketches``); both executors give identical results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

AggKind = Literal[
    "count",
    "sum",
    "min",
    "max",
    "mean",
    "first",
    "last",
    "var",
    "std",
    "count_distinct",
    "approx_count_distinct",
    "approx_quantile",
]
KINDS: tuple[AggKind, ...] = (
    "count",
    "sum",
    "min",
    "max",
    "mean",
    "first",
    "last",
    "var",
    "std",
    "count_distinct",
    "approx_count_distinct",
    "approx_quantile",
)


@dataclass(frozen=True)
class Agg:
    """One aggregation: ``kind`` over ``column`` (``None`` only for ``count()``), named ``name``."""

    kind: AggKind
    column: str | None
    name: str
    q: float | None = None
    """The quantile, for ``approx_quantile`` only."""

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        """The output column's type given the input column's type (``None`` for ``count()``)."""
        if self.kind in ("count", "count_distinct", "approx_count_distinct"):
            return pl.Int64()
        if self.kind in ("mean", "var", "std", "approx_quantile"):
            return pl.Float64()
        assert input_dtype is not None
        if self.kind == "sum":
            if input_dtype.is_integer() or input_dtype == pl.Boolean:
                return pl.Int64()
            return pl.Float64()
        return input_dtype


def _agg(kind: AggKind, column: str | None, alias: str | None) -> Agg:
    if column is not None and not isinstance(column, str):
        raise TypeError(f"agg.{kind}() takes a column name, got {column!r}")
    default = kind if column is None else f"{kind}_{column}"
    return Agg(kind, column, alias or default)


def count(column: str | None = None, *, alias: str | None = None) -> Agg:
    """Number of events (or of non-null values of ``column``)."""
    return _agg("count", column, alias)


def sum(column: str, *, alias: str | None = None) -> Agg:
    """Sum of non-null values (Int64 for integer columns, Float64 otherwise)."""
    return _agg("sum", column, alias)


def min(column: str, *, alias: str | None = None) -> Agg:
    """Smallest non-null value."""
    return _agg("min", column, alias)


def max(column: str, *, alias: str | None = None) -> Agg:
    """Largest non-null value."""
    return _agg("max", column, alias)


def mean(column: str, *, alias: str | None = None) -> Agg:
    """Arithmetic mean of non-null values (Float64)."""
    return _agg("mean", column, alias)


def first(column: str, *, alias: str | None = None) -> Agg:
    """Value of the earliest event by event time (see module docstring for ties)."""
    return _agg("first", column, alias)


def last(column: str, *, alias: str | None = None) -> Agg:
    """Value of the latest event by event time (see module docstring for ties)."""
    return _agg("last", column, alias)


def var(column: str, *, alias: str | None = None) -> Agg:
    """Sample variance of non-null values (Float64; null with fewer than two)."""
    return _agg("var", column, alias)


def std(column: str, *, alias: str | None = None) -> Agg:
    """Sample standard deviation of non-null values (Float64; null with fewer than two)."""
    return _agg("std", column, alias)


def count_distinct(column: str, *, alias: str | None = None) -> Agg:
    """Exact number of distinct non-null values (state grows with the distinct values)."""
    return _agg("count_distinct", column, alias)


def approx_count_distinct(column: str, *, alias: str | None = None) -> Agg:
    """Approximate number of distinct non-null values (HyperLogLog, ~1.6% standard error)."""
    return _agg("approx_count_distinct", column, alias)


def approx_quantile(column: str, q: float, *, alias: str | None = None) -> Agg:
    """Approximate ``q``-quantile of non-null numeric values (Float64, linear interpolation):
    exact up to 2048 values per window, else rank error <= 3.6% with probability >= 99%."""
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
        raise ValueError(f"agg.approx_quantile() needs 0 <= q <= 1, got {q!r}")
    name = alias or f"q{round(q * 100):02d}_{column}"
    return Agg("approx_quantile", _column(column, "approx_quantile"), name, float(q))


def _column(column: str, kind: str) -> str:
    if not isinstance(column, str):
        raise TypeError(f"agg.{kind}() takes a column name, got {column!r}")
    return column


def quantile(column: str, q: float, *, alias: str | None = None) -> Agg:
    """Not implemented (exact quantiles need every value in state); raises NotImplementedError.
    Use :func:`approx_quantile`."""
    raise NotImplementedError(
        "agg.quantile (exact) is not implemented: use agg.approx_quantile(column, q)"
    )
