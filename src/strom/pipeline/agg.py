"""Aggregations over windows: ``agg.count()``, ``agg.mean("temp")`` …

Each aggregation names its output column (``count``, ``count_x``, ``sum_x``, ``mean_temp`` …) and
fixes its output type from the input column's type, so every executor produces the same schema.

Semantics (identical in every executor):

- ``count()`` counts events; ``count(col)`` counts non-null values of ``col``.
- ``sum``, ``min``, ``max``, ``mean`` ignore nulls and are null when a window has no non-null value.
- ``first``/``last`` take the value (null included) of the earliest/latest event by event time;
  ties are broken by source partition index, then by position within that partition's stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NoReturn

import polars as pl

AggKind = Literal["count", "sum", "min", "max", "mean", "first", "last"]
KINDS: tuple[AggKind, ...] = ("count", "sum", "min", "max", "mean", "first", "last")


@dataclass(frozen=True)
class Agg:
    """One aggregation: ``kind`` over ``column`` (``None`` only for ``count()``), named ``name``."""

    kind: AggKind
    column: str | None
    name: str

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        """The output column's type given the input column's type (``None`` for ``count()``)."""
        if self.kind == "count":
            return pl.Int64()
        if self.kind == "mean":
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


def _not_yet(kind: str) -> NoReturn:
    raise NotImplementedError(f"agg.{kind} is not implemented yet; available: {', '.join(KINDS)}")


def std(column: str, *, alias: str | None = None) -> Agg:
    """Not implemented yet (raises NotImplementedError)."""
    _not_yet("std")


def var(column: str, *, alias: str | None = None) -> Agg:
    """Not implemented yet (raises NotImplementedError)."""
    _not_yet("var")


def count_distinct(column: str, *, alias: str | None = None) -> Agg:
    """Not implemented yet (raises NotImplementedError)."""
    _not_yet("count_distinct")


def quantile(column: str, q: float, *, alias: str | None = None) -> Agg:
    """Not implemented yet (raises NotImplementedError)."""
    _not_yet("quantile")
