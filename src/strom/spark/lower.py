"""Lowering a strom plan to Spark DataFrames: one exhaustive ``match`` over the plan nodes.

Each node becomes a :class:`Frame` (a Spark DataFrame, the node's Polars schema, and whether
each row still carries its tie-breaking order ``PART``/``SEQ``). What each node becomes:

- sources: :mod:`strom.spark.sources`;
- ``filter`` / ``with_columns`` / ``select``: native Spark columns when every expression is in
  :mod:`strom.spark.exprs`' exact subset, else the node's exact Polars expressions inside
  ``mapInArrow`` (refused, naming the expression, if its result would depend on batch
  boundaries);
- ``map_batches`` (with a declared ``schema=``) and ``map`` / ``flat_map``: ``mapInArrow``;
- ``key_by``: nothing (keys are named by the window that follows); ``union``: ``unionByName``;
- windows: :mod:`strom.spark.windows`; their late output, and the interval join's, are empty
  (a bounded run has no late rows, as in the bounded runner);
- interval joins: a Spark equi-join on the keys filtered by the time bounds;
- lookup joins: the table is asked once on the driver for every distinct key, and its answer
  broadcast-joined (left) to the stream, as the bounded runner does;
- keyed aggregations, equi-joins, sort, top-k and distinct: :mod:`strom.spark.relational`;
- keyed process functions, ``predict`` and as-of joins: refused (process functions need per-key
  ordered state: run them with the bounded runner or the streaming runtime).

A frame's :attr:`Frame.order` is the bounded runner's row order of it where Spark knows it:
sinks receive rows in that order (windows and keyed aggregations by key, sorts sorted,
distinct in input order), and sort and distinct break ties by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import assert_never

import polars as pl
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from strom.engine.aggregations import First, Last
from strom.engine.constants import (
    LEFT_TS,
    LOOKUP_KEY,
    PART,
    RIGHT_TS,
    SEQ,
    WINDOW_END,
    WINDOW_START,
)
from strom.engine.joins import right_side, value_schema
from strom.engine.schemas import keyed_agg_schema, late_schema, window_schema
from strom.engine.transforms import apply_exprs
from strom.pipeline.plan import (
    JOIN_TIME,
    AsofJoinNode,
    DistinctNode,
    ExprNode,
    FilterNode,
    IntervalJoinLateNode,
    IntervalJoinNode,
    JoinNode,
    KeyByNode,
    KeyedAggNode,
    LateNode,
    LookupJoinNode,
    MapBatchesNode,
    MapNode,
    Node,
    Plan,
    PlanNode,
    PredictNode,
    ProcessNode,
    SelectNode,
    SinkNode,
    SortNode,
    SourceNode,
    StatelessNode,
    UnionNode,
    WindowAggNode,
    WithColumnsNode,
)
from strom.pipeline.validate import PlanError
from strom.spark.arrow import ORDER, PolarsStep, detached, with_order
from strom.spark.exprs import batch_dependent, native_column
from strom.spark.relational import (
    ROW_ORDER,
    Order,
    SortKey,
    by_keys,
    distinct,
    equi_join,
    keyed_agg,
    sort,
)
from strom.spark.sources import read_source
from strom.spark.types import spark_schema
from strom.spark.windows import event_time, window_agg


@dataclass(frozen=True)
class Frame:
    """A node's rows in Spark: ``df`` has ``schema``'s columns (Spark types of them), then
    ``PART`` and ``SEQ`` if ``ordered``.

    ``order``: the bounded runner's order of these rows, as sort keys over ``df``'s columns
    (``()``: it promises none, so any order is right; None: Spark does not know it).
    ``sorted``: ``df``'s rows already are in ``order`` (a sort's output), so a sink need not
    sort them again."""

    df: DataFrame
    schema: pl.Schema
    ordered: bool
    order: Order | None = None
    sorted: bool = False

    def unordered(self) -> Frame:
        if not self.ordered:
            return self
        uses_row = self.order is not None and any(k.column in ORDER for k in self.order)
        order = None if uses_row else self.order
        return Frame(self.df.drop(*ORDER), self.schema, False, order, self.sorted)


class Lowering:
    """Lowers the nodes of ``plan`` on ``spark``, each once (a node read by several others is
    one DataFrame; Spark recomputes it per action unless cached)."""

    def __init__(self, plan: Plan, spark: SparkSession) -> None:
        self.plan = plan
        self.spark = spark
        self._memo: dict[Node, Frame] = {}
        self._first_partition: dict[SourceNode, int] = {}
        offset = 0
        for source in plan.sources():
            self._first_partition[source] = offset
            offset += source.source.partition_count()
        self._ordered = ordered_sources(plan)
        """The sources whose rows carry their order (PART, SEQ)."""
        self.native: list[str] = []
        """Each lowered expression node's label and how it ran (for reports and tests)."""

    def frame(self, node: PlanNode) -> Frame:
        if node not in self._memo:
            self._memo[node] = self._lower(node)
        return self._memo[node]

    def _lower(self, node: PlanNode) -> Frame:
        match node:
            case SourceNode():
                part = self._first_partition[node]
                ordered = node in self._ordered
                df, schema = read_source(self.spark, node, part, ordered)
                frame = Frame(df, schema, True, ROW_ORDER)  # PART/SEQ dropped if not ordered
                return frame if ordered else frame.unordered()
            case FilterNode() | WithColumnsNode() | SelectNode():
                return self._exprs(node, self.frame(node.input))
            case MapBatchesNode() | MapNode():
                if node.schema is None:
                    raise PlanError(
                        f"{node.label}: the Spark backend needs the output schema of "
                        "map_batches: pass schema=... (Spark declares every column's type "
                        "before running)"
                    )
                return self._in_arrow(node, self.frame(node.input).unordered(), node.schema)
            case ProcessNode():
                raise PlanError(
                    f"{node.label}: keyed process functions are not supported by the Spark "
                    "backend (they need per-key state in event-time order); run the pipeline "
                    "with the bounded runner or the streaming runtime"
                )
            case KeyByNode() | SinkNode():
                return self.frame(node.input)
            case UnionNode():
                return self._union(node)
            case WindowAggNode():
                up = self.frame(node.input)
                ts = self.plan.timestamps.get(node.input)
                assert ts is not None  # validated
                df = window_agg(node, up.df, up.schema, ts, up.ordered)
                schema = window_schema(node.keys, node.aggs, up.schema)
                order = (SortKey(WINDOW_END), SortKey(WINDOW_START), *by_keys(node.keys))
                return Frame(df, schema, False, order)
            case KeyedAggNode():
                up = self.frame(node.input)
                ts_column = self.plan.timestamps.get(node.input)
                df = keyed_agg(node, up.df, up.schema, ts_column, up.ordered)
                schema = keyed_agg_schema(node.keys, node.aggs, up.schema)
                return Frame(df, schema, False, by_keys(node.keys))
            case JoinNode():
                left, right = self.frame(node.left), self.frame(node.right)
                df, schema = equi_join(node, left.df, left.schema, right.df, right.schema)
                return Frame(df, schema, False, ())  # no order promised, as in the bounded runner
            case SortNode():
                up = self.frame(node.input)
                return Frame(sort(node, up.df, up.order), up.schema, True, ROW_ORDER, True)
            case DistinctNode():
                up = self.frame(node.input)
                df = distinct(node, up.df, up.schema, up.order)
                return Frame(df, up.schema, up.ordered, up.order)
            case LateNode():
                return self._empty(late_schema(self.frame(node.input.inputs[0]).schema))
            case IntervalJoinNode():
                return self._interval_join(node)
            case IntervalJoinLateNode():
                side = node.input.inputs[0 if node.side == "left" else 1]
                return self._empty(self.frame(side).schema)
            case LookupJoinNode():
                return self._lookup_join(node)
            case PredictNode() | AsofJoinNode():
                raise PlanError(
                    f"{node.label}: not supported by the Spark backend yet; run the pipeline "
                    "with the bounded runner (strom run without --engine spark)"
                )
            case _:
                assert_never(node)

    def _empty(self, schema: pl.Schema) -> Frame:
        out = spark_schema(schema, "empty output")
        return Frame(self.spark.createDataFrame([], out), schema, False, ())

    def _exprs(self, node: ExprNode, up: Frame) -> Frame:
        schema = apply_exprs(node, pl.LazyFrame(schema=up.schema)).collect_schema()
        exprs = (node.predicate,) if isinstance(node, FilterNode) else node.exprs
        columns = [native_column(e, up.schema) for e in exprs]
        if all(c is not None for c in columns):
            native = [c for c in columns if c is not None]
            self.native.append(f"{node.label}: native")
            match node:
                case FilterNode():
                    df = up.df.filter(native[0])
                case WithColumnsNode():
                    df = up.df.withColumns(dict(zip(self._names(node), native, strict=True)))
                case SelectNode():
                    order = [F.col(c) for c in ORDER] if up.ordered else []
                    df = up.df.select(*native, *order)
                case _:
                    assert_never(node)
            return Frame(df, schema, up.ordered, kept_order(node, up.order), up.sorted)
        for e in exprs:
            reason = batch_dependent(e)
            if reason is not None:
                raise PlanError(
                    f"{node.label}: the expression {e} is not row-wise ({reason}): its result "
                    "would depend on how Spark splits its input into batches; the Spark backend "
                    "runs only row-wise expressions"
                )
        if isinstance(node, SelectNode) and all(not e.meta.root_names() for e in exprs):
            raise PlanError(f"{node.label}: a select of literals only has no rows to keep")
        self.native.append(f"{node.label}: mapInArrow")
        return self._in_arrow(node, up, schema)

    @staticmethod
    def _names(node: WithColumnsNode) -> list[str]:
        return [e.meta.output_name() for e in node.exprs]

    def _in_arrow(self, node: StatelessNode, up: Frame, schema: pl.Schema) -> Frame:
        ordered = up.ordered and not isinstance(node, MapBatchesNode | MapNode)
        out_schema = with_order(schema) if ordered else schema
        out = spark_schema(out_schema, node.label)
        step = PolarsStep(detached(node), up.schema, to_arrow_schema(out), up.ordered)
        df = up.df.mapInArrow(step, out)
        if isinstance(node, MapBatchesNode | MapNode):
            return Frame(df, schema, False)  # its rows are not the input's: order unknown
        # a partition's batches come back in order, partitions in theirs
        assert isinstance(node, ExprNode)
        return Frame(df, schema, ordered, kept_order(node, up.order), up.sorted)

    def _union(self, node: UnionNode) -> Frame:
        """Row order is kept when every branch carries it and the branches' partitions follow
        each other (the bounded runner's union concatenates branches in order, which PART
        then reproduces)."""
        frames = [self.frame(b) for b in node.branches]
        ordered = all(f.ordered for f in frames)
        if not ordered:
            frames = [f.unordered() for f in frames]
        df = frames[0].df
        for other in frames[1:]:
            df = df.unionByName(other.df)
        spans = [self._span(b) for b in node.branches]
        follow = all(a is not None and b is not None and a[1] < b[0] for a, b in pairwise(spans))
        return Frame(df, frames[0].schema, ordered, ROW_ORDER if ordered and follow else None)

    def _span(self, node: PlanNode) -> tuple[int, int] | None:
        """The smallest and largest PART of ``node``'s rows, if known."""
        match node:
            case SourceNode():
                first = self._first_partition[node]
                return first, first + node.source.partition_count() - 1
            case SortNode():
                return -1, -1
            case UnionNode():
                spans = [self._span(b) for b in node.branches]
                if any(s is None for s in spans):
                    return None
                return min(s[0] for s in spans if s), max(s[1] for s in spans if s)
            case (
                FilterNode()
                | WithColumnsNode()
                | SelectNode()
                | KeyByNode()
                | LookupJoinNode()
                | DistinctNode()
            ):
                return self._span(node.input)
            case _:
                return None

    def _interval_join(self, node: IntervalJoinNode) -> Frame:
        left, right = self.frame(node.left).unordered(), self.frame(node.right).unordered()
        left_ts, right_ts = self.plan.timestamps[node.left], self.plan.timestamps[node.right]
        assert left_ts is not None and right_ts is not None  # validated
        kept, renamed = node.output_columns(list(left.schema), left_ts, list(right.schema))
        keys = [f"__strom_key{i}" for i in range(len(node.right_on))]
        r = right.df.select(
            *(F.col(f"`{c}`").alias(k) for c, k in zip(node.right_on, keys, strict=True)),
            *(F.col(f"`{c}`").alias(n) for c, n in renamed.items()),
            event_time(right_ts, right.schema[right_ts]).alias(RIGHT_TS),
        )
        lt = left.df.withColumn(LEFT_TS, event_time(left_ts, left.schema[left_ts]))
        condition: Column = F.lit(True)
        for lk, k in zip(node.left_on, keys, strict=True):
            condition = condition & (lt[f"`{lk}`"] == r[k])
        if node.lower_ms is not None:
            condition = condition & (r[RIGHT_TS] >= lt[LEFT_TS] + node.lower_ms)
        if node.upper_ms is not None:
            condition = condition & (r[RIGHT_TS] <= lt[LEFT_TS] + node.upper_ms)
        joined = lt.join(r, condition, "inner").select(
            *(lt[f"`{c}`"] for c in kept),
            *(r[f"`{n}`"] for n in renamed.values()),
            F.greatest(lt[LEFT_TS], r[RIGHT_TS]).alias(JOIN_TIME),
        )
        schema: dict[str, pl.DataType] = {c: left.schema[c] for c in kept}
        schema.update({n: right.schema[c] for c, n in renamed.items()})
        schema[JOIN_TIME] = pl.Int64()
        return Frame(joined, pl.Schema(schema), False)

    def _lookup_join(self, node: LookupJoinNode) -> Frame:
        """Ask the table once, on the driver, for every distinct non-null key of the input."""
        up = self.frame(node.input)
        key_dtype = up.schema[node.on]
        keys_table = up.df.select(F.col(f"`{node.on}`")).dropna().distinct().toArrow()
        keys = pl.Series(node.on, keys_table.column(0).to_pylist(), dtype=key_dtype)
        found = node.table.lookup(keys) if keys.len() else None
        values = value_schema(node, found)
        if found is None:
            found = pl.DataFrame(schema={node.table.key: key_dtype, **values})
        right = right_side(node, found, key_dtype, values)
        right_schema = pl.Schema({LOOKUP_KEY: key_dtype, **values})
        out = spark_schema(right_schema, node.label)
        table = self.spark.createDataFrame(right.to_arrow().cast(to_arrow_schema(out)), out)
        joined = up.df.join(F.broadcast(table), up.df[f"`{node.on}`"] == table[LOOKUP_KEY], "left")
        schema = pl.Schema({**up.schema, **values})
        order = [up.df[c] for c in (PART, SEQ)] if up.ordered else []
        df = joined.select(*(F.col(f"`{c}`") for c in schema), *order)
        return Frame(df, schema, up.ordered, up.order)


def kept_order(node: ExprNode, order: Order | None) -> Order | None:
    """``order`` after ``node`` if the columns it sorts by keep their values (a filter, or
    columns neither replaced nor dropped), else None."""
    if order is None or isinstance(node, FilterNode):
        return order
    names = {k.column for k in order} - set(ORDER)
    if isinstance(node, WithColumnsNode):
        replaced = {e.meta.output_name(raise_if_undetermined=False) for e in node.exprs}
        return None if None in replaced or names & replaced else order
    selected = {e.meta.output_name() for e in node.exprs if e.meta.is_column()}
    return order if names <= selected else None


def ordered_sources(plan: Plan) -> set[SourceNode]:
    """The sources whose rows must carry their order (PART, SEQ): those a ``first``/``last``,
    a sort (ties) or a distinct reads through nodes that keep rows in order. The others are
    read without it (reading Parquet row indices costs)."""
    wanted: set[SourceNode] = set()
    seen: set[Node] = set()

    def walk(node: PlanNode) -> None:
        if node in seen:
            return
        seen.add(node)
        match node:
            case SourceNode():
                wanted.add(node)
            case UnionNode():
                for branch in node.branches:
                    walk(branch)
            case (
                FilterNode()
                | WithColumnsNode()
                | SelectNode()
                | KeyByNode()
                | SinkNode()
                | LookupJoinNode()
                | DistinctNode()
            ):
                walk(node.input)
            case _:
                pass  # a sort or an aggregation orders its own output

    for n in plan.nodes():
        picks = isinstance(n, WindowAggNode | KeyedAggNode) and any(
            isinstance(a, First | Last) for a in n.aggs
        )
        if picks or isinstance(n, SortNode | DistinctNode):
            assert isinstance(n, WindowAggNode | KeyedAggNode | SortNode | DistinctNode)
            walk(n.input)
    return wanted
