"""Window aggregations as native Spark: window assignment, session cutting, aggregations
(:func:`aggregate`, which the keyed aggregation of :mod:`strom.spark.relational` uses too).

The same definitions as the other backends (:mod:`strom.pipeline.windows`,
:mod:`strom.engine.sessions`, :mod:`strom.engine.aggregations`), written as Spark columns:

- tumbling: ``start = ts - pmod(ts - offset, size)``; hopping: every candidate start
  ``last - j * slide`` exploded, kept while ``start + size > ts``;
- sessions: per key in event-time order, a row starts a session when it is the key's first or
  ``gap`` or more after the previous row (``lag``, then a running sum of the breaks);
- ``count``, ``sum``, ``mean``, ``min``, ``max``, ``var``, ``std`` and ``count_distinct`` as
  Spark's aggregate functions, with Polars' null and NaN rules (``max`` skips NaN unless every
  value is NaN, as Polars' does; Spark's own ``max`` would return NaN);
- ``first``/``last``: the value of the row with the smallest/largest ``(event time, PART,
  SEQ)``, as a ``min``/``max`` of a struct led by that key (null values included), which is
  strom's tie-breaking: event time, then source partition, then position.

Refused with a :class:`~strom.pipeline.validate.PlanError` naming the aggregation: the two
sketches (``approx_count_distinct``, ``approx_quantile``: their hashes and sample priorities are
strom's own), and ``first``/``last`` where the input's order is not known (after ``map``,
``map_batches``, a join or another window).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import assert_never

import polars as pl
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from strom.engine.aggregations import (
    Aggregation,
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
)
from strom.engine.constants import IS_UPDATE, PART, SEQ, SESSION, TS, WINDOW_END, WINDOW_START
from strom.engine.overflow import INT64_MAX, INT64_MIN, SumOverflowError, overflow_message
from strom.engine.schemas import window_schema
from strom.pipeline.plan import WindowAggNode
from strom.pipeline.validate import PlanError
from strom.pipeline.windows import Hopping, Session, Tumbling
from strom.spark.types import spark_type


def event_time(column: str, dtype: pl.DataType) -> Column:
    """The event time in epoch ms (Int64); a null one fails the task, naming the column (the
    bounded runner refuses null event times too)."""
    message = f"a row has a null event time in column {column!r}; filter or fill it first"
    raised = F.raise_error(F.lit(message)).cast("long")
    return F.when(F.col(f"`{column}`").isNull(), raised).otherwise(epoch_ms(column, dtype))


def epoch_ms(column: str, dtype: pl.DataType) -> Column:
    """``column`` as epoch milliseconds (Int64; null stays null), as
    :func:`strom.pipeline.windows.event_time_ms` (integers are taken as ms)."""
    col = F.col(f"`{column}`")
    if isinstance(dtype, pl.Datetime):
        return F.unix_millis(col.cast("timestamp"))
    return col.cast("long")


def window_agg(
    node: WindowAggNode, df: DataFrame, schema: pl.Schema, ts_column: str, ordered: bool
) -> DataFrame:
    """The window results of ``node`` over ``df`` (columns of ``schema``, plus PART and SEQ if
    ``ordered``), in :func:`strom.engine.schemas.window_schema`'s columns and types."""
    out_schema = window_schema(node.keys, node.aggs, schema)
    where = f"{node.label}: "
    aggs = [aggregate(a, schema, ordered, where).alias(a.name) for a in node.aggs]
    keys = [F.col(f"`{k}`") for k in node.keys]
    framed = df.withColumn(TS, event_time(ts_column, schema[ts_column]))
    window = node.window
    if isinstance(window, Session):
        grouped = (
            _sessions(framed, keys, window.gap_ms)
            .groupBy(*keys, F.col(SESSION))
            .agg(
                F.min(TS).alias(WINDOW_START), (F.max(TS) + window.gap_ms).alias(WINDOW_END), *aggs
            )
        )
    else:
        grouped = _assign(framed, window).groupBy(*keys, WINDOW_START, WINDOW_END).agg(*aggs)
    grouped = checked_sums(grouped, node.aggs, schema, [*node.keys, WINDOW_START, WINDOW_END])
    return typed(grouped, out_schema, where)


def typed(grouped: DataFrame, out_schema: pl.Schema, where: str) -> DataFrame:
    """An aggregation's groups as exactly ``out_schema``'s columns, in its Spark types, with
    ``is_update`` False (a bounded run emits each result once)."""
    return grouped.select(
        *(
            (F.lit(False) if n == IS_UPDATE else F.col(f"`{n}`"))
            .cast(spark_type(t, f"{where}column {n!r}"))
            .alias(n)
            for n, t in out_schema.items()
        )
    )


_EXACT = T.DecimalType(38, 0)
_HOLE = "\x00"


def checked_sums(
    grouped: DataFrame, aggs: Sequence[Aggregation], schema: pl.Schema, group: Sequence[str]
) -> DataFrame:
    """``grouped`` with each integer ``agg.sum`` (exact, from :func:`aggregate`) failing the
    job with :func:`strom.engine.overflow.overflow_message`, naming the first of ``group``'s
    values, where it is outside Int64's range (:func:`raise_overflow` turns the failure back
    into a :class:`~strom.engine.overflow.SumOverflowError`)."""
    for a in aggs:
        if not isinstance(a, Sum) or a.column is None:
            continue
        if a.output_dtype(schema[a.column]) != pl.Int64:  # float and Decimal sums: as they are
            continue
        total = F.col(f"`{a.name}`")
        # the message is the other backends', its two holes filled per failing group
        template = overflow_message(a.column, a.name, _HOLE, _HOLE if group else "")
        pieces: list[Column] = []
        for i, text in enumerate(template.split(_HOLE)):
            if i == 1:
                pieces.append(total.cast("string"))
            elif i == 2:
                values = [F.concat(F.lit(f"{g}="), F.col(f"`{g}`").cast("string")) for g in group]
                pieces.append(F.concat_ws(", ", *values))
            pieces.append(F.lit(text))
        message = F.concat(*pieces)
        out_of_range = (total < INT64_MIN) | (total > INT64_MAX)
        grouped = grouped.withColumn(
            a.name, F.when(out_of_range, F.raise_error(message).cast(_EXACT)).otherwise(total)
        )
    return grouped


@contextmanager
def raise_overflow() -> Iterator[None]:
    """Turn a Spark job failed by :func:`checked_sums` into the
    :class:`~strom.engine.overflow.SumOverflowError` the other backends raise."""
    try:
        yield
    except Exception as exc:
        found = _OVERFLOW.search(str(exc))
        if found is None:
            raise
        raise SumOverflowError(found.group(0)) from exc


_OVERFLOW = re.compile(r"agg\.sum\(.*? is outside Int64's range .*?or pl\.Float64")


def _assign(df: DataFrame, window: Tumbling | Hopping) -> DataFrame:
    ts = F.col(TS)
    if isinstance(window, Tumbling):
        start = ts - F.pmod(ts - window.offset_ms, F.lit(window.size_ms))
        return df.withColumn(WINDOW_START, start).withColumn(
            WINDOW_END, F.col(WINDOW_START) + window.size_ms
        )
    last = ts - F.pmod(ts - window.offset_ms, F.lit(window.slide_ms))
    count = -(-window.size_ms // window.slide_ms)
    starts = F.array(*[last - j * window.slide_ms for j in range(count)])
    return (
        df.withColumn(WINDOW_START, F.explode(starts))
        .withColumn(WINDOW_END, F.col(WINDOW_START) + window.size_ms)
        .filter(F.col(WINDOW_END) > ts)
    )


def _sessions(df: DataFrame, keys: list[Column], gap_ms: int) -> DataFrame:
    """Number each key's sessions in :data:`SESSION` (unique within a key, as groups need)."""
    by_time = Window.partitionBy(*keys).orderBy(TS)
    previous = F.lag(TS).over(by_time)
    breaks = F.when(previous.isNull() | (F.col(TS) - previous >= gap_ms), 1).otherwise(0)
    running = by_time.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return df.withColumn("__strom_break", breaks).withColumn(
        SESSION, F.sum("__strom_break").over(running)
    )


def aggregate(a: Aggregation, schema: pl.Schema, ordered: bool, where: str) -> Column:
    """``a`` as a Spark aggregate over rows of ``schema`` (with :data:`TS`, and PART and SEQ
    if ``ordered``, for ``first``/``last``); the caller casts it to ``a``'s output type."""
    column = None if a.column is None else F.col(f"`{a.column}`")
    dtype = None if a.column is None else schema[a.column]
    match a:
        case Count():
            return F.count(F.lit(1)) if column is None else F.count(column)
        case Sum():
            assert column is not None and dtype is not None
            if isinstance(dtype, pl.Decimal):  # exact, as Polars sums decimals
                return F.sum(column)
            if dtype.is_integer() or dtype == pl.Boolean:
                # exact in 38 digits, checked against Int64's range by checked_sums: Spark's
                # long sum wraps (ANSI off) or fails on a partial sum's overflow (ANSI on)
                return F.sum(column.cast("int" if dtype == pl.Boolean else "long").cast(_EXACT))
            return F.sum(column.cast("double"))
        case Mean():
            assert column is not None and dtype is not None
            if dtype.is_integer() or dtype == pl.Boolean:  # the exact sum, rounded once
                exact = F.sum(column.cast("int" if dtype == pl.Boolean else "long").cast(_EXACT))
                return exact.cast("double") / F.count(column)
            return F.avg(column.cast("double"))
        case Min():
            assert column is not None
            return F.min(column)  # Spark's NaN sorts last: min skips it unless all are NaN
        case Max():
            assert column is not None and dtype is not None
            if dtype.is_float():  # skip NaN unless every value is NaN, as Polars' max does
                return F.coalesce(F.max(F.when(~F.isnan(column), column)), F.max(column))
            return F.max(column)
        case First() | Last():
            assert column is not None
            if not ordered:
                raise PlanError(
                    f"{where}agg.{a.label}({a.column!r}) needs its input's order (event time, "
                    "partition, position), which the Spark backend does not know after map, "
                    "map_batches, a join or an aggregation; use it before them"
                )
            key = F.struct(F.col(TS), F.col(PART), F.col(SEQ), column.alias("v"))
            return (F.min(key) if isinstance(a, First) else F.max(key)).getField("v")
        case Var():
            assert column is not None
            return F.var_samp(column.cast("double"))
        case Std():
            assert column is not None
            return F.stddev_samp(column.cast("double"))
        case CountDistinct():
            assert column is not None
            return F.count_distinct(column)
        case ApproxCountDistinct() | ApproxQuantile():
            raise PlanError(
                f"{where}agg.{a.label}() is not supported by the Spark backend (its sketch is "
                "strom's own); use agg.count_distinct, or run with the bounded runner"
            )
        case _:
            assert_never(a)
