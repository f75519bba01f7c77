"""Columnar accumulator slots: one NumPy array per slot, indexed by a dense state row id.

Each aggregation keeps its state in arrays that grow together (see :class:`Slots`). A batch's
partials (from :meth:`strom.engine.aggregation.Agg.partial_exprs`) are read once into
arrays; rows new to the state are *put*, rows already held are *merged*, both vectorized. Row ids
within one call are unique (partials are grouped by state key), so ``a[ids] += x`` is exact.

Session windows also *absorb* one row into another (a late event bridged two sessions): the
row's own arrays serve as the partial, as their layout is the partials' layout.

Numeric state reproduces the per-row rules of :mod:`strom.engine.aggregations` exactly (the
same elementwise hooks, same float expressions in the same order). Aggregations whose state is
not a fixed-width number (``count_distinct``, sketches, ``min``/``max``/``sum`` over non-numeric
types) keep one accumulator list per row in an object array and merge per row with those rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar, assert_never

import numpy as np
import numpy.typing as npt
import polars as pl

from strom.engine import overflow
from strom.engine.aggregation import Agg
from strom.engine.aggregations import (
    Additive,
    Aggregation,
    ApproxCountDistinct,
    ApproxQuantile,
    Count,
    CountDistinct,
    Extreme,
    First,
    Last,
    Max,
    Mean,
    Min,
    Moments,
    Pick,
    Std,
    Sum,
    Var,
)
from strom.engine.values import decode_column, encode_column
from strom.runtime.windows.accumulators import partial_prefix

IdArray = npt.NDArray[np.int64]
Array = npt.NDArray[Any]
A = TypeVar("A", bound=Agg)


def physical_numpy_dtype(dtype: pl.DataType) -> np.dtype[Any] | None:
    """The NumPy dtype of ``dtype``'s physical values, or None if it has no fixed-width one."""
    if not (dtype.is_integer() or dtype.is_float() or dtype.is_temporal() or dtype == pl.Boolean):
        return None
    try:
        np_dtype = pl.Series([], dtype=dtype).to_physical().to_numpy().dtype
    except Exception:  # any dtype NumPy cannot hold goes the object way
        return None
    return np_dtype if np_dtype.kind in "iufb" and np_dtype.itemsize <= 8 else None


def object_array(values: Sequence[Any]) -> Array:
    """A 1-D object array of ``values`` (nested lists stay elements, never a second axis)."""
    return np.fromiter(values, dtype=object, count=len(values))


def grown(array: Array, capacity: int) -> Array:
    out = np.zeros(capacity, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


class Values:
    """Values of one Polars dtype per row: physical NumPy values plus validity, or objects."""

    def __init__(self, dtype: pl.DataType, capacity: int) -> None:
        self.dtype = dtype
        np_dtype = physical_numpy_dtype(dtype)
        self.numeric = np_dtype is not None
        self.values: Array = np.zeros(capacity, dtype=np_dtype if np_dtype is not None else object)
        self.valid: Array = np.zeros(capacity, dtype=bool)

    def grow(self, capacity: int) -> None:
        self.values, self.valid = grown(self.values, capacity), grown(self.valid, capacity)

    def read(self, series: pl.Series) -> tuple[Array, Array]:
        """A batch column as (values, valid) arrays in this store's representation."""
        valid = series.is_not_null().to_numpy()
        if not self.numeric:
            return object_array(series.to_list()), valid
        physical = series.to_physical()
        if series.null_count():
            physical = physical.fill_null(pl.lit(0, dtype=physical.dtype))
        return physical.to_numpy().astype(self.values.dtype, copy=False), valid

    def put(self, ids: IdArray, values: Array, valid: Array) -> None:
        self.values[ids] = values
        self.valid[ids] = valid

    def series(self, name: str, ids: IdArray) -> pl.Series:
        if not self.numeric:
            return pl.Series(name, self.values[ids].tolist(), dtype=self.dtype)
        out = pl.Series(name, self.values[ids])
        if out.dtype != self.dtype:
            out = out.cast(self.dtype)
        invalid = np.flatnonzero(~self.valid[ids])
        return out.scatter(invalid, None) if invalid.size else out

    def clear(self, ids: IdArray) -> None:
        if not self.numeric:
            self.values[ids] = None

    def dump(self, name: str, ids: IdArray) -> pl.Series:
        return self.series(name, ids)

    def load(self, ids: IdArray, column: pl.Series) -> None:
        self.put(ids, *self.read(column.cast(self.dtype)))


class Slots(Generic[A]):
    """One aggregation's state arrays; subclasses define read/put/merge/output."""

    def __init__(self, index: int, agg: A) -> None:
        self.prefix = partial_prefix(index)
        self.agg = agg
        self.arrays: list[Array] = []

    def grow(self, capacity: int) -> None:
        self.arrays = [grown(a, capacity) for a in self.arrays]

    def read(self, partials: pl.DataFrame) -> list[Array]:
        """This aggregation's partial columns of a batch, as arrays."""
        raise NotImplementedError

    def put(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        """Rows ``ids`` are new: their state is partial rows ``pos``."""
        for array, source in zip(self.arrays, part, strict=True):
            array[ids] = source[pos]

    def merge(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        """Fold partial rows ``pos`` into the state of rows ``ids``."""
        raise NotImplementedError

    def absorb(self, ids: IdArray, sources: IdArray) -> None:
        """Fold the state of rows ``sources`` into rows ``ids`` (ids unique, none a source)."""
        self.merge(ids, self.arrays, sources, 0)

    def output(self, ids: IdArray, dtype: pl.DataType) -> pl.Series:
        raise NotImplementedError

    def clear(self, ids: IdArray) -> None:
        """Rows ``ids`` are freed (object state is released)."""

    def dump(self, ids: IdArray) -> list[pl.Series]:
        """Rows ``ids`` of this aggregation's state as typed columns (for snapshots)."""
        return [pl.Series(f"{self.prefix}{j}", a[ids]) for j, a in enumerate(self.arrays)]

    def load(self, ids: IdArray, columns: Sequence[pl.Series]) -> None:
        """Rows ``ids`` get the state :meth:`dump` made."""
        for array, column in zip(self.arrays, columns, strict=True):
            array[ids] = column.to_numpy()

    def _col(self, partials: pl.DataFrame, suffix: str) -> pl.Series:
        return partials.get_column(self.prefix + suffix)


class CountSlots(Slots[Count]):
    def __init__(self, index: int, agg: Count, capacity: int) -> None:
        super().__init__(index, agg)
        self.arrays = [np.zeros(capacity, np.int64)]

    def read(self, partials: pl.DataFrame) -> list[Array]:
        return [self._col(partials, "n").to_numpy().astype(np.int64)]

    def merge(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        self.arrays[0][ids] += part[0][pos]

    def output(self, ids: IdArray, dtype: pl.DataType) -> pl.Series:
        return pl.Series(self.agg.name, self.arrays[0][ids], dtype=dtype)


class SumSlots(Slots[Additive]):
    """``sum``/``mean``: floats ``[sum, non_null_count]``; integers (and Booleans) exactly, as
    ``[lo, non_null_count, wraps]`` (:mod:`strom.engine.overflow`: the sum modulo ``2**64``
    and its multiples of ``2**64`` beyond), from Int128 partials."""

    def __init__(self, index: int, agg: Additive, capacity: int, integer: bool) -> None:
        super().__init__(index, agg)
        self.integer = integer
        self.arrays = [np.zeros(capacity, np.int64 if integer else np.float64)]
        self.arrays.append(np.zeros(capacity, np.int64))
        if integer:
            self.arrays.append(np.zeros(capacity, np.int64))
        # an upper bound of any row's |sum| (and of every partial sum on the way to it): a row
        # sums some of the partials read so far, each at most once, so the sum of every
        # partial's |value| bounds it; while that is in Int64's range no add can cross a
        # bound and merges skip the sign test (a long run's bound grows past it: then merges
        # test, as after a restore)
        self.reach = 0

    def read(self, partials: pl.DataFrame) -> list[Array]:
        n = self._col(partials, "n").to_numpy().astype(np.int64)
        if self.integer:
            lo, wraps, reach = overflow.split_words(self._col(partials, "s"))
            self.reach += reach
            return [lo, n, wraps]
        return [self._col(partials, "s").to_numpy().astype(np.float64), n]

    def put(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        if self.integer and self.reach <= overflow.INT64_MAX:  # wraps are all zero, stay so
            self.arrays[0][ids], self.arrays[1][ids] = part[0][pos], part[1][pos]
            return
        super().put(ids, part, pos, partition)

    def merge(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        if self.integer:
            lo, wraps = self.arrays[0], self.arrays[2]
            may_cross = self.reach > overflow.INT64_MAX
            overflow.add_wrapping(lo, wraps, ids, part[0][pos], part[2][pos], may_cross=may_cross)
        else:
            self.arrays[0][ids] += part[0][pos]
        self.arrays[1][ids] += part[1][pos]

    def output(self, ids: IdArray, dtype: pl.DataType) -> pl.Series:
        total, n = self.arrays[0][ids], self.arrays[1][ids]
        if self.integer and self.reach > overflow.INT64_MAX:  # else no sum has wrapped
            wraps = self.arrays[2][ids]
            if isinstance(self.agg, Sum):
                out_of_range = np.flatnonzero(wraps)
                if out_of_range.size:
                    i = int(out_of_range[0])
                    value = overflow.exact(total[i], wraps[i])
                    raise RowOverflow(self.agg, value, int(ids[i]))
            else:
                total = overflow.as_float(total, wraps)
        with np.errstate(divide="ignore", invalid="ignore"):
            total = self.agg.finish(total, n)
        out = pl.Series(self.agg.name, total).cast(dtype)
        empty = np.flatnonzero(n == 0)
        return out.scatter(empty, None) if empty.size else out

    def load(self, ids: IdArray, columns: Sequence[pl.Series]) -> None:
        if self.integer and len(columns) == 2:  # a snapshot from before sums kept wraps
            columns = [*columns, pl.Series(np.zeros(len(columns[0]), np.int64))]
        super().load(ids, columns)
        self.reach = overflow.INT64_MAX + 1  # restored sums: no bound known, always test


class RowOverflow(Exception):
    """``agg``'s sum ``total`` is out of Int64's range at state row ``row``: the state turns
    it into the :class:`~strom.engine.overflow.SumOverflowError` naming the row's group."""

    def __init__(self, agg: Sum, total: int, row: int) -> None:
        super().__init__(f"{agg.name}: {total} at row {row}")
        self.agg, self.total, self.row = agg, total, row


class MinMaxSlots(Slots[Extreme]):
    """``min``/``max`` over fixed-width values: physical value and validity."""

    def __init__(self, index: int, agg: Extreme, capacity: int, dtype: pl.DataType) -> None:
        super().__init__(index, agg)
        self.values = Values(dtype, capacity)
        self.arrays = [self.values.values, self.values.valid]

    def grow(self, capacity: int) -> None:
        self.values.grow(capacity)
        self.arrays = [self.values.values, self.values.valid]

    def read(self, partials: pl.DataFrame) -> list[Array]:
        return list(self.values.read(self._col(partials, "v")))

    def merge(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        x, x_valid = self.values.values[ids], self.values.valid[ids]
        y, y_valid = part[0][pos], part[1][pos]
        better = self.agg.better(y, x)
        take = y_valid & (~x_valid | better)
        self.values.values[ids] = np.where(take, y, x)
        self.values.valid[ids] = x_valid | y_valid

    def output(self, ids: IdArray, dtype: pl.DataType) -> pl.Series:
        return self.values.series(self.agg.name, ids)

    def dump(self, ids: IdArray) -> list[pl.Series]:
        return [self.values.dump(f"{self.prefix}v", ids)]

    def load(self, ids: IdArray, columns: Sequence[pl.Series]) -> None:
        self.values.load(ids, columns[0])


class MomentSlots(Slots[Moments]):
    """``var``/``std``: ``[n, mean, M2]`` merged by Chan et al.'s formula, vectorized."""

    def __init__(self, index: int, agg: Moments, capacity: int) -> None:
        super().__init__(index, agg)
        self.arrays = [
            np.zeros(capacity, np.int64),
            np.zeros(capacity, np.float64),
            np.zeros(capacity, np.float64),
        ]

    def read(self, partials: pl.DataFrame) -> list[Array]:
        n = self._col(partials, "n").to_numpy().astype(np.int64)
        mean = self._col(partials, "m").fill_null(0.0).to_numpy().astype(np.float64)
        m2 = self._col(partials, "m2").fill_null(0.0).to_numpy().astype(np.float64)
        empty = n == 0
        mean[empty], m2[empty] = 0.0, 0.0
        return [n, mean, m2]

    def merge(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        n_arr, mean_arr, m2_arr = self.arrays
        n_a, mean_a, m2_a = n_arr[ids], mean_arr[ids], m2_arr[ids]
        n_b, mean_b, m2_b = part[0][pos], part[1][pos], part[2][pos]
        n = n_a + n_b
        delta = mean_b - mean_a
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = mean_a + delta * n_b / n
            m2 = m2_a + m2_b + delta * delta * n_a * n_b / n
        only_b = n_a == 0
        keep_a = n_b == 0
        mean = np.where(keep_a, mean_a, np.where(only_b, mean_b, mean))
        m2 = np.where(keep_a, m2_a, np.where(only_b, m2_b, m2))
        n_arr[ids], mean_arr[ids], m2_arr[ids] = n, mean, m2

    def output(self, ids: IdArray, dtype: pl.DataType) -> pl.Series:
        n, m2 = self.arrays[0][ids], self.arrays[2][ids]
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = self.agg.finish(np.maximum(m2, 0.0) / (n - 1))
        out = pl.Series(self.agg.name, variance, dtype=pl.Float64)
        small = np.flatnonzero(n < 2)
        return out.scatter(small, None) if small.size else out


class PickSlots(Slots[Pick]):
    """``first``/``last``: order key ``(event_time, partition, seq)`` and the value."""

    def __init__(self, index: int, agg: Pick, capacity: int, dtype: pl.DataType) -> None:
        super().__init__(index, agg)
        self.values = Values(dtype, capacity)
        self.order = [np.zeros(capacity, np.int64) for _ in range(3)]
        self.arrays = [*self.order, self.values.values, self.values.valid]

    def grow(self, capacity: int) -> None:
        self.order = [grown(a, capacity) for a in self.order]
        self.values.grow(capacity)
        self.arrays = [*self.order, self.values.values, self.values.valid]

    def read(self, partials: pl.DataFrame) -> list[Array]:
        t = self._col(partials, "t").to_numpy().astype(np.int64)
        q = self._col(partials, "q").to_numpy().astype(np.int64)
        return [t, q, *self.values.read(self._col(partials, "v"))]

    def put(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int | IdArray) -> None:
        self.order[0][ids] = part[0][pos]
        self.order[1][ids] = partition
        self.order[2][ids] = part[1][pos]
        self.values.put(ids, part[2][pos], part[3][pos])

    def merge(
        self, ids: IdArray, part: list[Array], pos: IdArray, partition: int | IdArray
    ) -> None:
        """As :meth:`Slots.merge`; ``partition`` may also be one per row (see :meth:`absorb`)."""
        t1, p1, q1 = (a[ids] for a in self.order)
        t2, q2 = part[0][pos], part[1][pos]
        take = self.agg.takes((t2, partition, q2), (t1, p1, q1))
        chosen = ids[take]
        if chosen.size:
            picked = pos[take]
            chosen_partition = partition[take] if isinstance(partition, np.ndarray) else partition
            self.put(chosen, part, picked, chosen_partition)

    def absorb(self, ids: IdArray, sources: IdArray) -> None:
        part = [self.order[0], self.order[2], self.values.values, self.values.valid]
        self.merge(ids, part, sources, self.order[1][sources])

    def output(self, ids: IdArray, dtype: pl.DataType) -> pl.Series:
        return self.values.series(self.agg.name, ids)

    def clear(self, ids: IdArray) -> None:
        self.values.clear(ids)

    def dump(self, ids: IdArray) -> list[pl.Series]:
        order = [pl.Series(f"{self.prefix}{j}", a[ids]) for j, a in enumerate(self.order)]
        return [*order, self.values.dump(f"{self.prefix}v", ids)]

    def load(self, ids: IdArray, columns: Sequence[pl.Series]) -> None:
        for array, column in zip(self.order, columns[:3], strict=True):
            array[ids] = column.to_numpy()
        self.values.load(ids, columns[3])


class ObjectSlots(Slots[Agg]):
    """Any aggregation, one accumulator list per row, merged per row (the slow path)."""

    def __init__(self, index: int, agg: Agg, capacity: int, columns: Sequence[str]) -> None:
        super().__init__(index, agg)
        self.columns = list(columns)
        self.arrays = [np.full(capacity, None, dtype=object)]

    def grow(self, capacity: int) -> None:
        array = np.full(capacity, None, dtype=object)
        array[: self.arrays[0].shape[0]] = self.arrays[0]
        self.arrays = [array]

    def read(self, partials: pl.DataFrame) -> list[Array]:
        columns = [partials.get_column(c).to_list() for c in self.columns]
        return [object_array(list(zip(*columns, strict=True)))]

    def put(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        state, rows, agg = self.arrays[0], part[0], self.agg
        for i, j in zip(ids.tolist(), pos.tolist(), strict=True):
            acc = agg.create()
            agg.add(acc, rows[j], partition)
            state[i] = acc

    def merge(self, ids: IdArray, part: list[Array], pos: IdArray, partition: int) -> None:
        state, rows, agg = self.arrays[0], part[0], self.agg
        for i, j in zip(ids.tolist(), pos.tolist(), strict=True):
            agg.add(state[i], rows[j], partition)

    def absorb(self, ids: IdArray, sources: IdArray) -> None:
        state, agg = self.arrays[0], self.agg
        for i, j in zip(ids.tolist(), sources.tolist(), strict=True):
            agg.merge(state[i], state[j])

    def output(self, ids: IdArray, dtype: pl.DataType) -> pl.Series:
        result = self.agg.result
        values = [result(acc) for acc in self.arrays[0][ids].tolist()]
        return pl.Series(self.agg.name, values, dtype=dtype)

    def clear(self, ids: IdArray) -> None:
        self.arrays[0][ids] = None

    def dump(self, ids: IdArray) -> list[pl.Series]:
        """One accumulator list per row, as plain-data bytes (:mod:`strom.engine.values`)."""
        return [encode_column(f"{self.prefix}acc", self.arrays[0][ids].tolist())]

    def load(self, ids: IdArray, columns: Sequence[pl.Series]) -> None:
        state = self.arrays[0]
        for i, acc in zip(ids.tolist(), decode_column(columns[0]), strict=True):
            state[i] = acc


def make_slots(
    index: int,
    agg: Aggregation,
    input_schema: pl.Schema,
    partial_columns: Sequence[str],
    capacity: int,
) -> Slots[Any]:
    """The slots of aggregation number ``index``: vectorized when its state is numeric."""
    dtype = input_schema[agg.column] if agg.column is not None else None
    match agg:
        case Count():
            return CountSlots(index, agg, capacity)
        case Var() | Std():
            return MomentSlots(index, agg, capacity)
        case First() | Last():
            assert dtype is not None
            return PickSlots(index, agg, capacity, dtype)
        case Sum() | Mean():
            assert dtype is not None
            if dtype == pl.Boolean or dtype.is_integer():  # Int128 partials, any width
                return SumSlots(index, agg, capacity, integer=True)
            if dtype.is_float():
                return SumSlots(index, agg, capacity, integer=False)
        case Min() | Max():
            assert dtype is not None
            if physical_numpy_dtype(dtype):
                return MinMaxSlots(index, agg, capacity, dtype)
        case CountDistinct() | ApproxCountDistinct() | ApproxQuantile():
            pass  # sets and sketches: per-row objects
        case _:
            assert_never(agg)
    prefix = partial_prefix(index)
    return ObjectSlots(index, agg, capacity, [c for c in partial_columns if c.startswith(prefix)])
