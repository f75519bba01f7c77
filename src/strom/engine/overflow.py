"""Exact integer sums, and the error when one leaves Int64's range.

``agg.sum`` over an integer or Boolean column is Int64 in every backend, and its value is the
exact sum of the group's non-null values or a :class:`SumOverflowError`: never a wrapped
number. The error depends only on the exact sum (not on how rows were split into batches,
partials, tasks or checkpoints), so every backend raises it for the same groups. A sum that
leaves Int64's range and comes back (``[2**62, 2**62, -2**62]``) is exact, as in DuckDB
(whose ``sum(BIGINT)`` is a ``HUGEINT``).

How each layout stays exact:

- Polars partials and bounded sums add in Int128 (:func:`widened`): exact for any integer
  type while a group has fewer than ``2**64`` rows per partial. The streaming runtime sums a
  batch with Polars' own ``sum`` instead (as fast as before) when :func:`narrow_is_exact`
  proves that no group of it can leave the range of the type Polars sums in.
- NumPy state (the streaming runtime's slots) keeps a sum as two Int64 words: ``lo``, the sum
  modulo ``2**64`` (what wrapping Int64 addition computes anyway), and ``wraps``, how many
  times ``2**64`` the exact sum differs from ``lo``: exact sum ``= lo + wraps * 2**64``, in
  range exactly when ``wraps == 0``. Adding is one wrapping add, plus a sign test once the sums
  could reach a bound (:func:`add_wrapping`); ``wraps`` changes only when a sum crosses one.
- Python accumulators use Python ints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_WORD = 2**64

Int64Array = npt.NDArray[np.int64]


class SumOverflowError(OverflowError):
    """An integer ``agg.sum`` whose exact value is outside Int64's range; the message
    (:func:`overflow_message`) names the aggregation, its column, the sum and the group."""

    def __init__(self, message: str) -> None:
        # Polars re-raises an error from a bounded check (a UDF) as the same type with the
        # expression appended: keep the message the same on every backend
        super().__init__(message.split(_POLARS_CONTEXT, 1)[0])


_POLARS_CONTEXT = "\n\nThis error occurred in the following expression"


def overflow_message(column: str | None, name: str, total: str, group: str = "") -> str:
    """The message of a :class:`SumOverflowError` (``group`` from :func:`describe_group`)."""
    where = f" for {group}" if group else ""
    return (
        f"agg.sum({column!r}) into column {name!r}: the sum {total} is outside Int64's range "
        f"[-2**63, 2**63 - 1]{where}; sum a wider type instead, e.g. "
        f"pl.col({column!r}).cast(pl.Decimal(38, 0)) (exact) or pl.Float64"
    )


def describe_group(values: Mapping[str, Any]) -> str:
    """A group's key (and window) columns as ``k=1, window_start=0`` for error messages."""
    return ", ".join(f"{name}={value!r}" for name, value in values.items())


# the largest sum Polars' own ``sum`` of each integer type holds (it sums Int32 in Int32,
# UInt32 and Boolean in UInt32), kept within Int64's range so every partial casts to Int64
_NARROW_LIMIT: dict[type[pl.DataType], int] = {
    **dict.fromkeys([pl.Int8, pl.Int16, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt64], INT64_MAX),
    pl.Int32: 2**31 - 1,
    pl.UInt32: 2**32 - 1,
    pl.Boolean: 2**32 - 1,
}


def narrow_is_exact(batch: pl.DataFrame, columns: Sequence[str | None]) -> bool:
    """Whether Polars' own ``sum`` of ``batch``'s integer (and Boolean) ``columns`` is exact for
    every group and fits Int64: rows times the largest absolute value stays within the range
    of the type Polars sums in (NumPy's min and max per column: far cheaper than summing in
    Int128). Other columns are not checked."""
    for c in dict.fromkeys(columns):
        if c is None:
            continue
        dtype = batch.schema[c]
        if not (dtype.is_integer() or dtype == pl.Boolean):
            continue
        limit = _NARROW_LIMIT.get(type(dtype), 0)
        column = batch.get_column(c)
        if column.null_count() == column.len():
            continue
        if column.null_count():
            low, high = column.min(), column.max()
        else:  # a zero-copy view: no query per batch
            values = column.to_numpy()
            low, high = values.min(), values.max()
        peak = max(abs(int(low)), abs(int(high)))  # type: ignore[arg-type]
        if batch.height * peak > limit:
            return False
    return True


def widened(expr: pl.Expr) -> pl.Expr:
    """``expr`` in a type whose sum cannot wrap: Polars' supertype with Int128 makes every
    integer and Boolean type Int128, floats Float64 and ``Decimal(p, s)`` ``Decimal(38, s)``
    (so one expression serves every input type, unknown when the partials are built)."""
    return expr + pl.lit(0, dtype=pl.Int128)


def in_range(total: int) -> bool:
    return INT64_MIN <= total <= INT64_MAX


def split_words(column: pl.Series) -> tuple[Int64Array, Int64Array, int]:
    """An Int128 (or narrower integer) column as ``(lo, wraps)`` Int64 arrays (null as 0),
    and the sum of its absolute values (for :func:`add_wrapping`'s ``may_cross``)."""
    if column.dtype != pl.Int128:  # Polars' own sums, where narrow_is_exact: their own lo
        narrow = column if column.dtype == pl.Int64 else column.cast(pl.Int64)
        lo = (narrow.fill_null(0) if narrow.null_count() else narrow).to_numpy().astype(np.int64)
        # Int64's abs could overflow; a float sum with a margin bounds the true sum
        reach = int(np.abs(lo.astype(np.float64)).sum() * (1 + 1e-6)) + 1
        return lo, np.zeros(len(lo), np.int64), reach
    wide = column.cast(pl.Int128).fill_null(0)
    reach = int(pl.DataFrame({"s": wide}).select(pl.col("s").abs().sum()).item())
    if reach <= INT64_MAX:  # the common case: every value is its own lo, no wraps
        zeros = np.zeros(len(wide), np.int64)
        return wide.cast(pl.Int64).to_numpy().astype(np.int64), zeros, reach
    low = pl.col("s").cast(pl.Int64, wrap_numerical=True)
    high = (pl.col("s") - low) // pl.lit(_WORD, dtype=pl.Int128)
    words = pl.DataFrame({"s": wide}).select(low.alias("lo"), high.cast(pl.Int64).alias("w"))
    return (
        words.get_column("lo").to_numpy().astype(np.int64),
        words.get_column("w").to_numpy().astype(np.int64),
        reach,
    )


def add_wrapping(
    lo: Int64Array,
    wraps: Int64Array,
    ids: Int64Array,
    add_lo: Int64Array,
    add_wraps: Int64Array,
    *,
    may_cross: bool = True,
) -> None:
    """``(lo, wraps)[ids] += (add_lo, add_wraps)`` exactly (``ids`` unique). ``may_cross=False``
    promises that no sum can pass a bound of Int64 (the caller knows the sums' reach) and
    that ``add_wraps`` is zero: the add is then a plain one."""
    a = lo[ids]
    total = a + add_lo  # wraps modulo 2**64 (NumPy arrays wrap silently)
    lo[ids] = total
    if not may_cross:
        return
    # a signed add overflowed iff both operands have the sign the result lacks
    crossed = ((a ^ total) & (add_lo ^ total)) < 0
    if crossed.any():
        # past the top, the wrapped result is negative; past the bottom, non-negative
        add_wraps = add_wraps + np.where(crossed, np.where(total < 0, 1, -1), 0)
    if add_wraps.any():
        wraps[ids] += add_wraps


def exact(lo: int, wraps: int) -> int:
    """The exact sum of one ``(lo, wraps)`` pair."""
    return int(lo) + int(wraps) * _WORD


def as_float(lo: Int64Array, wraps: Int64Array) -> npt.NDArray[np.float64]:
    """The sums as Float64 (for ``mean``): ``lo`` converted alone while no sum wrapped."""
    if not wraps.any():
        return lo.astype(np.float64)
    return lo.astype(np.float64) + wraps.astype(np.float64) * float(_WORD)
