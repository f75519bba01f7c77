"""Aggregations over windows, or per key over all time (``key_by(...).agg(...)``):
``agg.count()``, ``agg.mean("temp")`` …

Each aggregation names its output column, by default after the function and the column
(``count``, ``count_x``, ``sum_x``, ``mean_temp``, ``q50_temp`` …); name it yourself with
``name=`` or ``.alias()``: ``agg.mean("temp", name="avg_temp")`` or
``agg.mean("temp").alias("avg_temp")``. The output type follows from the input column's type,
so every executor produces the same schema.

Semantics (identical in every executor; each aggregation is one class of
:mod:`strom.engine.aggregations`):

- ``count()`` counts events; ``count(col)`` counts non-null values of ``col``.
- ``sum``, ``min``, ``max``, ``mean`` ignore nulls and are null when a window has no non-null value.
- An integer ``sum`` is the exact sum or a :class:`~strom.engine.overflow.SumOverflowError` (an
  ``OverflowError``) when that is outside Int64's range, never a wrapped number; whether it fails
  depends on the exact sum alone, not on batches, partitions or tasks (see
  :mod:`strom.engine.overflow`). ``mean`` of integers divides the exact sum and never fails.
- ``first``/``last`` take the value (null included) of the earliest/latest event by event time;
  ties are broken by source partition index, then by position within that partition's stream
  (a keyed aggregation over a stream without event time orders by those two alone).
- ``var``/``std`` are the sample variance / standard deviation (SQL ``var_samp``/``stddev_samp``)
  of non-null values, null with fewer than two. Streaming merges (count, mean, M2) partials, so
  they may differ from the bounded runner's in the last bits.
- ``count_distinct`` counts distinct non-null values exactly (state: the set of values).
- ``approx_count_distinct`` and ``approx_quantile`` are mergeable sketches with documented error
  (see ``strom.engine.sketches``); both executors give identical results.
"""

from __future__ import annotations

from strom.engine.aggregations import (
    ApproxCountDistinct,
    ApproxQuantile,
    Count,
    CountDistinct,
    First,
    Last,
    Max,
    Mean,
    Min,
    Std,
    Sum,
    Var,
    check_quantile,
)


def _name(label: str, column: str | None, name: str | None) -> str:
    if name is not None:
        return name
    return label if column is None else f"{label}_{column}"


def count(column: str | None = None, *, name: str | None = None) -> Count:
    """Number of events (or of non-null values of ``column``)."""
    return Count(column, _name("count", column, name))


def sum(column: str, *, name: str | None = None) -> Sum:
    """Sum of non-null values (Int64 for integer and Boolean columns, exact Decimal for Decimal
    columns, Float64 otherwise).

    An integer sum is exact or raises :class:`~strom.engine.overflow.SumOverflowError` (an
    ``OverflowError`` naming the aggregation, the column, the exact sum and the group: keys and
    window) where the exact sum leaves Int64's range, on every backend; a sum that leaves the
    range and comes back is exact. A streaming keyed aggregation's updates are sums of the rows
    so far, each checked. For a wider sum, sum ``pl.col(c).cast(pl.Decimal(38, 0))`` (exact) or
    a Float64 column."""
    return Sum(column, _name("sum", column, name))


def min(column: str, *, name: str | None = None) -> Min:
    """Smallest non-null value."""
    return Min(column, _name("min", column, name))


def max(column: str, *, name: str | None = None) -> Max:
    """Largest non-null value."""
    return Max(column, _name("max", column, name))


def mean(column: str, *, name: str | None = None) -> Mean:
    """Arithmetic mean of non-null values (Float64)."""
    return Mean(column, _name("mean", column, name))


def first(column: str, *, name: str | None = None) -> First:
    """Value of the earliest event by event time (see module docstring for ties)."""
    return First(column, _name("first", column, name))


def last(column: str, *, name: str | None = None) -> Last:
    """Value of the latest event by event time (see module docstring for ties)."""
    return Last(column, _name("last", column, name))


def var(column: str, *, name: str | None = None) -> Var:
    """Sample variance of non-null values (Float64; null with fewer than two)."""
    return Var(column, _name("var", column, name))


def std(column: str, *, name: str | None = None) -> Std:
    """Sample standard deviation of non-null values (Float64; null with fewer than two)."""
    return Std(column, _name("std", column, name))


def count_distinct(column: str, *, name: str | None = None) -> CountDistinct:
    """Exact number of distinct non-null values (state grows with the distinct values)."""
    return CountDistinct(column, _name("count_distinct", column, name))


def approx_count_distinct(column: str, *, name: str | None = None) -> ApproxCountDistinct:
    """Approximate number of distinct non-null values (HyperLogLog, ~1.6% standard error)."""
    return ApproxCountDistinct(column, _name("approx_count_distinct", column, name))


def approx_quantile(column: str, q: float, *, name: str | None = None) -> ApproxQuantile:
    """Approximate ``q``-quantile of non-null numeric values (Float64, linear interpolation):
    exact up to 2048 values per window, else rank error <= 3.6% with probability >= 99%.
    Named ``q50_<column>`` for ``q=0.5`` by default."""
    q = check_quantile(q)
    default = f"q{round(q * 100):02d}_{column}"
    return ApproxQuantile(column, name if name is not None else default, q)


def quantile(column: str, q: float, *, name: str | None = None) -> ApproxQuantile:
    """Not implemented (exact quantiles need every value in state); raises NotImplementedError.
    Use :func:`approx_quantile`."""
    raise NotImplementedError(
        "agg.quantile (exact) is not implemented: use agg.approx_quantile(column, q)"
    )
