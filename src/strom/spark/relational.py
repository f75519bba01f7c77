"""Keyed aggregation, equi-joins, sort, top-k and distinct as native Spark.

The definitions are :mod:`strom.engine.relational`'s (the bounded runner's), written as Spark
DataFrame operations:

- a keyed aggregation is one ``groupBy(keys).agg(...)`` of :func:`strom.spark.windows.aggregate`
  (the windows' aggregations); ``first``/``last`` order by the input's event time (a null one
  before every other, none: 0, as :func:`strom.engine.relational.order_time`), then
  ``PART``, then ``SEQ``; results are ordered by key (nulls first);
- an equi-join is a Spark join on ``==`` of each key pair, so null keys never match
  (``left_semi``/``left_anti`` for semi and anti joins, which never repeat a left row); its rows
  are in no promised order, as in the bounded runner;
- a sort is ``orderBy`` of its columns, then of the input's order (so ties keep input order),
  and ``limit`` for top-k; its rows get a new order: ``PART`` -1 and ``SEQ`` their position
  (``monotonically_increasing_id`` over the range-partitioned sorted output increases with it),
  as the bounded runner's sort output is one partition;
- distinct keeps, of each group of equal ``subset`` values (nulls equal), the row first in input
  order (``row_number`` over the group ordered by it); the output keeps that order.

Input order is an :data:`Order`: sort keys over the frame's columns reproducing the bounded
runner's row order. Where Spark does not know it (after ``map``, ``map_batches``, an interval
join, a union whose branches are not in source order), sort and distinct are refused with a
:class:`~strom.pipeline.validate.PlanError`, since their ties would differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import polars as pl
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from strom.engine.aggregations import First, Last
from strom.engine.constants import MIN_WATERMARK, PART, SEQ, TS
from strom.engine.schemas import keyed_agg_schema
from strom.pipeline.plan import DistinctNode, JoinNode, KeyedAggNode, SortNode
from strom.pipeline.validate import PlanError
from strom.spark.windows import aggregate, checked_sums, epoch_ms, typed


@dataclass(frozen=True)
class SortKey:
    """One column of a row order (nulls first unless ``nulls_last``, in either direction)."""

    column: str
    descending: bool = False
    nulls_last: bool = False

    def spark(self) -> Column:
        col = F.col(f"`{self.column}`")
        if self.descending:
            return col.desc_nulls_last() if self.nulls_last else col.desc_nulls_first()
        return col.asc_nulls_last() if self.nulls_last else col.asc_nulls_first()


Order = tuple[SortKey, ...]
"""A row order: sort keys, the first deciding. Empty: no order is promised (any is right)."""
ROW_ORDER: Order = (SortKey(PART), SortKey(SEQ))
"""The order of rows that carry ``PART`` and ``SEQ``: partition, then position."""


def by_keys(keys: tuple[str, ...]) -> Order:
    """Ascending by ``keys``, nulls first: the order of keyed results in the bounded runner."""
    return tuple(SortKey(k) for k in keys)


def keyed_agg(
    node: KeyedAggNode, df: DataFrame, schema: pl.Schema, ts_column: str | None, ordered: bool
) -> DataFrame:
    """``node``'s results over ``df`` (columns of ``schema``, plus PART and SEQ if ``ordered``)
    in :func:`strom.engine.schemas.keyed_agg_schema`'s columns and types, one row per key."""
    where = f"{node.label}: "
    if any(isinstance(a, First | Last) for a in node.aggs):
        ts = F.lit(0).cast("long")
        if ts_column is not None:
            ts = F.coalesce(epoch_ms(ts_column, schema[ts_column]), F.lit(MIN_WATERMARK))
        df = df.withColumn(TS, ts)
    aggs = [aggregate(a, schema, ordered, where).alias(a.name) for a in node.aggs]
    grouped = df.groupBy(*(F.col(f"`{k}`") for k in node.keys)).agg(*aggs)
    grouped = checked_sums(grouped, node.aggs, schema, node.keys)
    return typed(grouped, keyed_agg_schema(node.keys, node.aggs, schema), where)


_HOW = {"inner": "inner", "left": "left", "semi": "left_semi", "anti": "left_anti"}


def equi_join(
    node: JoinNode,
    left: DataFrame,
    left_schema: pl.Schema,
    right: DataFrame,
    right_schema: pl.Schema,
) -> tuple[DataFrame, pl.Schema]:
    """``left`` joined to ``right`` as :func:`strom.engine.relational.equi_join` joins them:
    every left column, then the kept right columns under their output names; and its schema."""
    renamed = node.output_columns(list(left_schema), list(right_schema))
    # every column under a name of its own, so no reference is ambiguous (a self-join included)
    lefts = {c: f"__strom_l{i}" for i, c in enumerate(left_schema)}
    rights = {c: f"__strom_r{i}" for i, c in enumerate(renamed)}
    keys = [f"__strom_key{i}" for i in range(len(node.right_on))]
    lt = left.select(*(F.col(f"`{c}`").alias(n) for c, n in lefts.items()))
    rt = right.select(
        *(F.col(f"`{c}`").alias(k) for c, k in zip(node.right_on, keys, strict=True)),
        *(F.col(f"`{c}`").alias(n) for c, n in rights.items()),
    )
    pairs = [F.col(lefts[c]) == F.col(k) for c, k in zip(node.left_on, keys, strict=True)]
    joined = lt.join(rt, reduce(lambda a, b: a & b, pairs), _HOW[node.how])
    out = joined.select(
        *(F.col(n).alias(c) for c, n in lefts.items()),
        *(F.col(rights[c]).alias(name) for c, name in renamed.items()),
    )
    schema = {**left_schema, **{name: right_schema[c] for c, name in renamed.items()}}
    return out, pl.Schema(schema)


def _known(order: Order | None, what: str) -> Order:
    if order is None:
        raise PlanError(
            f"{what}: its ties follow the input's order, which the Spark backend does not know "
            "after map, map_batches, an interval join or a union of branches out of source "
            "order; sort or deduplicate before them, or run the pipeline with the bounded runner"
        )
    return order


def sort(node: SortNode, df: DataFrame, order: Order | None) -> DataFrame:
    """``df`` ordered by ``node``'s columns, ties in ``order`` (the input's), cut to
    ``node.limit`` rows; PART and SEQ replaced by the sorted order (see the module)."""
    ties = _known(order, node.label)
    by = [SortKey(c, d, node.nulls_last) for c, d in zip(node.by, node.descending, strict=True)]
    out = df.orderBy(*(k.spark() for k in (*by, *ties)))
    if node.limit is not None:
        out = out.limit(node.limit)
    return out.withColumns(
        {PART: F.lit(-1).cast("long"), SEQ: F.monotonically_increasing_id().cast("long")}
    )


_RANK = "__strom_rank"


def distinct(
    node: DistinctNode, df: DataFrame, schema: pl.Schema, order: Order | None
) -> DataFrame:
    """Of each group of equal ``node.subset`` values (whole rows if empty), the row first in
    ``order`` (the input's; empty: any row)."""
    ties = _known(order, node.label)
    subset = [F.col(f"`{c}`") for c in (node.subset or tuple(schema))]
    # an order Spark needs for row_number; without one promised, any row of the group is right
    within = [k.spark() for k in ties] or [F.lit(0)]
    rank = F.row_number().over(Window.partitionBy(*subset).orderBy(*within))
    return df.withColumn(_RANK, rank).filter(F.col(_RANK) == 1).drop(_RANK)
