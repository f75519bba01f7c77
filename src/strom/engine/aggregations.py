"""The window aggregations: one class per function (see :mod:`strom.engine.aggregation` for
what each defines and the laws they obey), and :data:`Aggregation`, the union of them all.

Each class's docstring gives its accumulator's layout; hooks documented as elementwise are
called with Python values by the accumulator rules and with NumPy arrays by the streaming
runtime's slots, so both compute the same values.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import polars as pl

from strom.engine import sketches
from strom.engine.aggregation import Agg
from strom.engine.constants import PART, SEQ, TS
from strom.engine.overflow import (
    INT64_MAX,
    INT64_MIN,
    SumOverflowError,
    describe_group,
    in_range,
    overflow_message,
    widened,
)

_NAN = float("nan")


def _numeric_error(label: str, dtype: pl.DataType) -> str | None:
    """The reason ``agg.<label>`` refuses a non-numeric column (Booleans count as 0/1)."""
    if dtype.is_numeric() or dtype == pl.Boolean:
        return None
    return f"agg.{label}() needs a numeric or Boolean column, not {dtype}"


def _ordered_error(label: str, dtype: pl.DataType) -> str | None:
    """The reason ``agg.<label>`` refuses a column whose values have no order."""
    if dtype.is_nested() or dtype in (pl.Null, pl.Object):
        return f"agg.{label}() needs a column of ordered values, not {dtype}"
    return None


@dataclass(frozen=True)
class Count(Agg):
    """Events (or non-null values of ``column``). Accumulator ``[n]``."""

    label = "count"
    partials = ("n",)
    width = 1

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        return pl.Int64()

    def _bounded(self) -> pl.Expr:
        return pl.len() if self.column is None else self.expr.count()

    def partial_exprs(self, prefix: str) -> list[pl.Expr]:
        return [self._bounded().alias(prefix + "n")]

    def create(self) -> list[Any]:
        return [0]

    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        acc[0] += partial[0]

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        into[0] += other[0]

    def result(self, acc: Sequence[Any]) -> Any:
        return acc[0]


@dataclass(frozen=True)
class Additive(Agg):
    """Sum-based aggregations. Accumulator ``[sum, non_null_count]``; null with no values.
    Integer sums are exact (:mod:`strom.engine.overflow`): partials add in Int128, accumulators
    hold Python ints."""

    partials = ("s", "n")
    width = 2

    def input_error(self, input_dtype: pl.DataType) -> str | None:
        return _numeric_error(self.label, input_dtype)

    def partial_exprs(self, prefix: str, *, narrow: bool = False) -> list[pl.Expr]:
        """As :meth:`Agg.partial_exprs`; ``narrow`` sums with Polars' own ``sum`` (a plain
        column sum: Polars' fast group-by path), only for batches where
        :func:`~strom.engine.overflow.narrow_is_exact`."""
        total = self.expr if narrow else widened(self.expr)
        return [total.sum().alias(prefix + "s"), self.expr.count().alias(prefix + "n")]

    def create(self) -> list[Any]:
        return [0, 0]

    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        self.merge(acc, partial)

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        into[0] += other[0]
        into[1] += other[1]

    def result(self, acc: Sequence[Any]) -> Any:
        return self.finish(acc[0], acc[1]) if acc[1] else None

    @abstractmethod
    def finish(self, total: Any, n: Any) -> Any:
        """The value from a sum and count of non-null values (elementwise on NumPy arrays)."""


@dataclass(frozen=True)
class Sum(Additive):
    """Sum of non-null values: Int64 for integer and Boolean columns, an exact Decimal of 38
    digits and the column's scale for Decimal columns (as SQL sums decimals), Float64
    otherwise. An integer sum is exact or a :class:`~strom.engine.overflow.SumOverflowError`
    (its exact value is outside Int64's range), whatever the batches and partials."""

    label = "sum"

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        assert input_dtype is not None
        if input_dtype.is_integer() or input_dtype == pl.Boolean:
            return pl.Int64()
        if isinstance(input_dtype, pl.Decimal):
            return pl.Decimal(38, input_dtype.scale)
        return pl.Float64()

    def bounded_exprs(self, dtype: pl.DataType) -> list[pl.Expr]:
        if dtype == pl.Int64:  # left in Int128 for bounded_finish to check
            return [self._bounded().alias(self.name)]
        return super().bounded_exprs(dtype)

    def _bounded(self) -> pl.Expr:
        return pl.when(self.expr.count() > 0).then(widened(self.expr).sum())

    def bounded_finish(self, dtype: pl.DataType, group: Sequence[str]) -> pl.Expr | None:
        if dtype != pl.Int64:
            return None
        fields = [*group, self.name]
        return (
            pl.struct(fields)
            .map_batches(
                lambda groups: self._checked(groups, group),
                return_dtype=pl.Int64,
                is_elementwise=True,
            )
            .alias(self.name)
        )

    def _checked(self, groups: pl.Series, group: Sequence[str]) -> pl.Series:
        """The Int128 sums of ``groups`` (a struct of ``group``'s columns and the sum) as
        Int64, or the error naming the first group out of range."""
        frame = groups.struct.unnest()
        total = frame.get_column(self.name)
        bad = (~total.is_between(INT64_MIN, INT64_MAX)).fill_null(False)
        if bad.any():
            row = frame.row(int(bad.arg_true()[0]), named=True)
            value = row.pop(self.name)
            raise self.overflow(value, describe_group({k: row[k] for k in group}))
        return total.cast(pl.Int64)

    def finish(self, total: Any, n: Any) -> Any:
        return total

    def result(self, acc: Sequence[Any]) -> Any:
        total = super().result(acc)
        if type(total) is int and not in_range(total):
            raise self.overflow(total)
        return total

    def overflow(self, total: int, group: str = "") -> SumOverflowError:
        """The error for a sum of ``total`` (outside Int64's range) in ``group``."""
        return SumOverflowError(overflow_message(self.column, self.name, str(total), group))


@dataclass(frozen=True)
class Mean(Additive):
    """Arithmetic mean of non-null values (Float64)."""

    label = "mean"

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        return pl.Float64()

    def _bounded(self) -> pl.Expr:
        col = self.expr
        # the exact (Int128) sum of integers, then one rounding, as the partials compute it
        return pl.when(col.count() > 0).then(widened(col).sum().cast(pl.Float64) / col.count())

    def finish(self, total: Any, n: Any) -> Any:
        return total / n


@dataclass(frozen=True)
class Extreme(Agg):
    """The best non-null value by :meth:`better`. Accumulator ``[value]`` (None: no value)."""

    partials = ("v",)
    width = 1

    def input_error(self, input_dtype: pl.DataType) -> str | None:
        return _ordered_error(self.label, input_dtype)

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        assert input_dtype is not None
        return input_dtype

    def partial_exprs(self, prefix: str) -> list[pl.Expr]:
        return [self._bounded().alias(prefix + "v")]

    def create(self) -> list[Any]:
        return [None]

    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        self.merge(acc, partial)

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        x, y = into[0], other[0]
        if x is None or (y is not None and self.better(y, x)):
            into[0] = y

    def result(self, acc: Sequence[Any]) -> Any:
        return acc[0]

    @abstractmethod
    def better(self, y: Any, x: Any) -> Any:
        """Whether ``y`` replaces ``x`` (elementwise on NumPy arrays)."""


@dataclass(frozen=True)
class Min(Extreme):
    """Smallest non-null value."""

    label = "min"

    def _bounded(self) -> pl.Expr:
        return self.expr.min()

    def better(self, y: Any, x: Any) -> Any:
        # a held NaN gives way to any value (x != x only for NaN), as Polars' min skips NaN
        # unless every value is NaN
        return (y < x) | (x != x)


@dataclass(frozen=True)
class Max(Extreme):
    """Largest non-null value."""

    label = "max"

    def _bounded(self) -> pl.Expr:
        return self.expr.max()

    def better(self, y: Any, x: Any) -> Any:
        # a held NaN gives way to any value (x != x only for NaN), as Polars' max skips NaN
        # unless every value is NaN
        return (y > x) | (x != x)


@dataclass(frozen=True)
class Pick(Agg):
    """The value (null included) of one event chosen by its order key ``(event time, source
    partition, position)``. Accumulator ``[event_time, partition, position, value]`` (event
    time None: empty); a partial is ``(event_time, position, value)``, its partition apart."""

    partials = ("t", "q", "v")
    width = 4
    needs_order = True

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        assert input_dtype is not None
        return input_dtype

    def _bounded(self) -> pl.Expr:
        return self._pick(self.expr)

    def partial_exprs(self, prefix: str) -> list[pl.Expr]:
        return [
            self._pick(pl.col(TS)).alias(prefix + "t"),
            self._pick(pl.col(SEQ)).alias(prefix + "q"),
            self._pick(self.expr).alias(prefix + "v"),
        ]

    def create(self) -> list[Any]:
        return [None, 0, 0, None]

    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        t, q, v = partial
        self.merge(acc, [t, partition, q, v])

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        if other[0] is None:
            return
        if into[0] is None or self.takes(tuple(other[:3]), tuple(into[:3])):
            into[:] = other

    def result(self, acc: Sequence[Any]) -> Any:
        return acc[3]

    @abstractmethod
    def _pick(self, expr: pl.Expr) -> pl.Expr: ...

    @abstractmethod
    def takes(self, theirs: tuple[Any, Any, Any], mine: tuple[Any, Any, Any]) -> Any:
        """Whether order key ``theirs`` replaces ``mine`` (elementwise on NumPy arrays)."""


def _before(a: tuple[Any, Any, Any], b: tuple[Any, Any, Any]) -> Any:
    """Whether order key ``a`` sorts before ``b``; ``|`` and ``&`` (not ``or``/``and``) so
    that it is elementwise on NumPy arrays and plain on Python values."""
    (t1, p1, q1), (t2, p2, q2) = a, b
    return (t1 < t2) | ((t1 == t2) & ((p1 < p2) | ((p1 == p2) & (q1 < q2))))


@dataclass(frozen=True)
class First(Pick):
    """The value of the earliest event (ties: lower partition, then earlier position)."""

    label = "first"

    def _pick(self, expr: pl.Expr) -> pl.Expr:
        return expr.first()

    def takes(self, theirs: tuple[Any, Any, Any], mine: tuple[Any, Any, Any]) -> Any:
        return _before(theirs, mine)


@dataclass(frozen=True)
class Last(Pick):
    """The value of the latest event (ties: higher partition, then later position)."""

    label = "last"

    def _pick(self, expr: pl.Expr) -> pl.Expr:
        return expr.last()

    def takes(self, theirs: tuple[Any, Any, Any], mine: tuple[Any, Any, Any]) -> Any:
        return _before(mine, theirs)


@dataclass(frozen=True)
class Moments(Agg):
    """Sample variance and its root (SQL ``var_samp``/``stddev_samp``) of non-null values,
    null with fewer than two. Accumulator ``[n, mean, M2]``, merged by Chan et al.'s formula
    (so it may differ from the bounded two-pass result in the last bits)."""

    partials = ("n", "m", "m2")
    width = 3

    def input_error(self, input_dtype: pl.DataType) -> str | None:
        return _numeric_error(self.label, input_dtype)

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        return pl.Float64()

    def partial_exprs(self, prefix: str) -> list[pl.Expr]:
        x = self.expr.cast(pl.Float64)
        return [
            x.count().alias(prefix + "n"),
            x.mean().alias(prefix + "m"),
            ((x - x.mean()) ** 2).sum().alias(prefix + "m2"),
        ]

    def create(self) -> list[Any]:
        return [0, 0.0, 0.0]

    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        n, mean, m2 = partial
        if n:
            self.merge(acc, [n, mean or 0.0, m2 or 0.0])

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        n_b, mean_b, m2_b = other
        if not n_b:
            return
        n_a, mean_a, m2_a = into
        if not n_a:
            into[:] = other
            return
        n = n_a + n_b
        delta = mean_b - mean_a
        into[:] = [n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n]

    def result(self, acc: Sequence[Any]) -> Any:
        n, m2 = acc[0], acc[2]
        if n < 2:
            return None
        return float(self.finish(max(m2, 0.0) / (n - 1)))

    @abstractmethod
    def finish(self, variance: Any) -> Any:
        """The value from the sample variance (elementwise on NumPy arrays)."""


@dataclass(frozen=True)
class Var(Moments):
    """Sample variance."""

    label = "var"

    def _bounded(self) -> pl.Expr:
        return self.expr.cast(pl.Float64).var(ddof=1)

    def finish(self, variance: Any) -> Any:
        return variance


@dataclass(frozen=True)
class Std(Moments):
    """Sample standard deviation."""

    label = "std"

    def _bounded(self) -> pl.Expr:
        return self.expr.cast(pl.Float64).std(ddof=1)

    def finish(self, variance: Any) -> Any:
        return np.power(variance, 0.5)  # libm pow for scalars and arrays alike (not sqrt)


@dataclass(frozen=True)
class CountDistinct(Agg):
    """Exact number of distinct non-null values. Accumulator ``[set of values]``."""

    label = "count_distinct"
    partials = ("d",)
    width = 1

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        return pl.Int64()

    def _bounded(self) -> pl.Expr:
        return self.expr.drop_nulls().n_unique()

    def partial_exprs(self, prefix: str) -> list[pl.Expr]:
        return [self.expr.drop_nulls().unique().alias(prefix + "d")]

    def create(self) -> list[Any]:
        return [set()]

    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        # NaN != NaN, so every NaN would be a new member; one shared NaN object is found by
        # identity, counting NaN once as Polars' n_unique does.
        acc[0].update(_NAN if v != v else v for v in partial[0])

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        into[0].update(_NAN if v != v else v for v in other[0])

    def result(self, acc: Sequence[Any]) -> Any:
        return len(acc[0])


@dataclass(frozen=True)
class ApproxCountDistinct(Agg):
    """HyperLogLog estimate of distinct non-null values (:mod:`strom.engine.sketches`).
    Accumulator ``[{register: rank}]``."""

    label = "approx_count_distinct"
    partials = ("h",)
    width = 1

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        return pl.Int64()

    def bounded_exprs(self, dtype: pl.DataType) -> list[pl.Expr]:
        return [sketches.hll_codes(self.expr).alias(self.name)]

    def bounded_finish(self, dtype: pl.DataType, group: Sequence[str]) -> pl.Expr:
        return pl.col(self.name).map_elements(
            lambda codes: sketches.hll_estimate(sketches.hll_from_codes(codes)),
            return_dtype=pl.Int64,
        )

    def partial_exprs(self, prefix: str) -> list[pl.Expr]:
        return [sketches.hll_codes(self.expr).alias(prefix + "h")]

    def create(self) -> list[Any]:
        return [{}]

    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        sketches.hll_merge(acc[0], sketches.hll_from_codes(partial[0]))

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        sketches.hll_merge(into[0], other[0])

    def result(self, acc: Sequence[Any]) -> Any:
        return sketches.hll_estimate(acc[0])


@dataclass(frozen=True)
class ApproxQuantile(Agg):
    """The ``q``-quantile (linear interpolation) of a bottom-k sample of non-null values
    (:mod:`strom.engine.sketches`). Accumulator ``[[(priority, value), ...]]``; partials need
    :data:`~strom.engine.constants.PART` and :data:`~strom.engine.constants.SEQ`."""

    q: float

    label = "approx_quantile"
    partials = ("p", "v")
    width = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_quantile(self.q)

    def input_error(self, input_dtype: pl.DataType) -> str | None:
        return _numeric_error(self.label, input_dtype)

    def output_dtype(self, input_dtype: pl.DataType | None) -> pl.DataType:
        return pl.Float64()

    def _sample(self) -> tuple[pl.Expr, pl.Expr]:
        priority = sketches.sample_priority(pl.col(PART), pl.col(SEQ))
        return sketches.sample_exprs(self.expr, priority)

    def bounded_exprs(self, dtype: pl.DataType) -> list[pl.Expr]:
        p, v = self._sample()
        return [p.alias(self.name + "__p"), v.alias(self.name)]

    def bounded_finish(self, dtype: pl.DataType, group: Sequence[str]) -> pl.Expr:
        q = self.q
        sample = pl.struct(pl.col(self.name + "__p").alias("p"), pl.col(self.name).alias("v"))
        return sample.map_elements(
            lambda s: sketches.sample_quantile(sketches.sample_from(s["p"], s["v"]), q),
            return_dtype=pl.Float64,
        ).alias(self.name)

    def partial_exprs(self, prefix: str) -> list[pl.Expr]:
        p, v = self._sample()
        return [p.alias(prefix + "p"), v.alias(prefix + "v")]

    def create(self) -> list[Any]:
        return [[]]

    def add(self, acc: list[Any], partial: Sequence[Any], partition: int) -> None:
        sketches.sample_merge(acc[0], sketches.sample_from(partial[0], partial[1]))

    def merge(self, into: list[Any], other: Sequence[Any]) -> None:
        sketches.sample_merge(into[0], other[0])

    def result(self, acc: Sequence[Any]) -> Any:
        return sketches.sample_quantile(acc[0], self.q)


def check_quantile(q: object) -> float:
    """``q`` as a float if it is a number in ``[0, 1]``; else ``ValueError``."""
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
        raise ValueError(f"agg.approx_quantile() needs 0 <= q <= 1, got {q!r}")
    return float(q)


Aggregation: TypeAlias = (
    Count
    | Sum
    | Mean
    | Min
    | Max
    | First
    | Last
    | Var
    | Std
    | CountDistinct
    | ApproxCountDistinct
    | ApproxQuantile
)
"""Every concrete aggregation (the closed set a backend's ``match`` must cover)."""
