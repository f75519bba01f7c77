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
- keyed process functions: refused (they need per-key ordered state: run them with the
  bounded runner or the streaming runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

import polars as pl
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from strom.engine.aggregations import First, Last
from strom.engine.constants import LEFT_TS, LOOKUP_KEY, PART, RIGHT_TS, SEQ
from strom.engine.joins import right_side, value_schema
from strom.engine.schemas import late_schema, window_schema
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
from strom.spark.sources import read_source
from strom.spark.types import spark_schema
from strom.spark.windows import event_time, window_agg


@dataclass(frozen=True)
class Frame:
    """A node's rows in Spark: ``df`` has ``schema``'s columns (Spark types of them), then
    ``PART`` and ``SEQ`` if ``ordered``."""

    df: DataFrame
    schema: pl.Schema
    ordered: bool

    def unordered(self) -> Frame:
        if not self.ordered:
            return self
        return Frame(self.df.drop(*ORDER), self.schema, False)


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
        self._needs_order = any(
            isinstance(a, First | Last)
            for n in plan.nodes()
            if isinstance(n, WindowAggNode)
            for a in n.aggs
        )
        """Some window takes first/last: sources carry their rows' order (PART, SEQ)."""
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
                df, schema = read_source(self.spark, node, part, self._needs_order)
                frame = Frame(df, schema, True)
                return frame if self._needs_order else frame.unordered()
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
                frames = [self.frame(b) for b in node.branches]
                if not all(f.ordered for f in frames):
                    frames = [f.unordered() for f in frames]
                df = frames[0].df
                for other in frames[1:]:
                    df = df.unionByName(other.df)
                return Frame(df, frames[0].schema, frames[0].ordered)
            case WindowAggNode():
                up = self.frame(node.input)
                ts = self.plan.timestamps.get(node.input)
                assert ts is not None  # validated
                df = window_agg(node, up.df, up.schema, ts, up.ordered)
                return Frame(df, window_schema(node.keys, node.aggs, up.schema), False)
            case LateNode():
                return self._empty(late_schema(self.frame(node.input.inputs[0]).schema))
            case IntervalJoinNode():
                return self._interval_join(node)
            case IntervalJoinLateNode():
                side = node.input.inputs[0 if node.side == "left" else 1]
                return self._empty(self.frame(side).schema)
            case LookupJoinNode():
                return self._lookup_join(node)
            case (
                KeyedAggNode()
                | JoinNode()
                | SortNode()
                | DistinctNode()
                | PredictNode()
                | AsofJoinNode()
            ):
                raise PlanError(
                    f"{node.label}: not supported by the Spark backend yet; run the pipeline "
                    "with the bounded runner (strom run without --engine spark)"
                )
            case _:
                assert_never(node)

    def _empty(self, schema: pl.Schema) -> Frame:
        out = spark_schema(schema, "empty output")
        return Frame(self.spark.createDataFrame([], out), schema, False)

    def _exprs(self, node: ExprNode, up: Frame) -> Frame:
        schema = apply_exprs(node, pl.LazyFrame(schema=up.schema)).collect_schema()
        exprs = (node.predicate,) if isinstance(node, FilterNode) else node.exprs
        columns = [native_column(e, up.schema) for e in exprs]
        if all(c is not None for c in columns):
            native = [c for c in columns if c is not None]
            self.native.append(f"{node.label}: native")
            match node:
                case FilterNode():
                    return Frame(up.df.filter(native[0]), schema, up.ordered)
                case WithColumnsNode():
                    named = dict(zip(self._names(node), native, strict=True))
                    return Frame(up.df.withColumns(named), schema, up.ordered)
                case SelectNode():
                    order = [F.col(c) for c in ORDER] if up.ordered else []
                    return Frame(up.df.select(*native, *order), schema, up.ordered)
                case _:
                    assert_never(node)
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
        return Frame(up.df.mapInArrow(step, out), schema, ordered)

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
        return Frame(df, schema, up.ordered)
