"""Lowering a plan to local-engine jobs: one :class:`SinkJob` per sink, each a DAG of stages.

A job is its sink path's stages, producers before consumers (:attr:`JobSpec.stages`). A stage
is a map stage over its input (files, or an earlier stage's results) and, unless it is the map-only
last one, a reduce stage per shuffle bucket. What the engine runs (anything else is a
:class:`~strom.pipeline.validate.PlanError` naming the node)::

    input  := FileSource | stage
    branch := input -> stateless steps / key_by / union
    stage  := branch(es) -> window | keyed aggregation | join (two inputs) | top-k | sort | distinct
    sink path := branch(es) [-> stage -> stateless steps] -> sink

so a join may feed an aggregation, a join another join, an aggregation a top-k or a sort
(:class:`WindowStage`, :class:`AggStage`, :class:`JoinStage`, :class:`TopKStage`,
:class:`SortStage`, :class:`DistinctStage`). A stage's results are its reduce tasks' outputs
(Arrow IPC files, committed per task), which the next stage's map tasks read as a
:class:`StageInput`; the steps between the two run in those map tasks. One stage node feeding two
consumers of one sink path is one stage.

Every path from an input to a stage (or to the sink) is a :class:`Branch`: the input and the
stateless steps applied to its rows in order, so a union is the branches of its inputs; a
join's branches carry the side they feed.

**Input order.** Ties of a sort, a top-k or a distinct break in the single-process runner's
input order: a file branch's rows in (branch, partition, position) order; an aggregation's or a
window's results in key (and window) order, which the local engine reproduces by those columns
(:attr:`StageInput.order`) when the steps after the aggregation keep them unchanged and every
branch of the consumer is such a result (else by task and position: the order of equal rows may
then differ from the single-process runner's); a join's results have no promised order there.
``first``/``last`` over an aggregation's or a window's results are a PlanError: they pick by
that order, which the tasks do not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import assert_never

import polars as pl

from strom.batch.columns import Need, in_order, needed
from strom.connectors.files import FileSink, FileSource
from strom.engine.aggregations import Aggregation, ApproxQuantile
from strom.engine.contracts import Sink
from strom.engine.relational import needs_positions
from strom.engine.schemas import keyed_agg_schema, window_schema
from strom.pipeline.plan import (
    AsofJoinNode,
    DistinctNode,
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
from strom.pipeline.windows import Hopping, Tumbling


@dataclass(frozen=True)
class StageInput:
    """The results of stage ``stage`` of the same job: its tasks' committed outputs (Arrow IPC),
    in task order, rows as ``schema``. ``order``: the columns that order them as the
    single-process runner does (an aggregation's keys, a window's end, start and keys; empty:
    their task order is that order, or none is promised)."""

    stage: int
    schema: pl.Schema
    order: tuple[str, ...] = ()


@dataclass(frozen=True)
class Branch:
    """Rows of ``source`` through ``steps``; a file source's partitions are numbered from
    ``first_partition`` (as the single-process runner numbers every source's partitions; a
    stage's results are one partition, -1, as there). ``side`` is the join input it feeds (0
    left, 1 right; 0 without a join)."""

    source: FileSource | StageInput
    source_name: str
    first_partition: int
    steps: tuple[StatelessNode, ...]
    side: int = 0
    columns: tuple[str, ...] | None = None
    """The columns it delivers after its steps (None: all): what is read after it
    (:mod:`strom.batch.columns`)."""


@dataclass(frozen=True)
class WindowStage:
    """A keyed tumbling or hopping window over the branches' rows (event time ``ts_column``)."""

    keys: tuple[str, ...]
    window: Tumbling | Hopping
    aggs: tuple[Aggregation, ...]
    ts_column: str
    input_schema: pl.Schema
    out_schema: pl.Schema

    @property
    def fanout(self) -> int:
        """Windows per row at most (the partials' growth over the input)."""
        if isinstance(self.window, Hopping):
            return -(-self.window.size_ms // self.window.slide_ms)
        return 1


@dataclass(frozen=True)
class AggStage:
    """A keyed aggregation over all of the branches' rows (no window): one row per key.
    ``ts_column`` is the input's event time (None: none), which ``first``/``last`` order by."""

    keys: tuple[str, ...]
    aggs: tuple[Aggregation, ...]
    ts_column: str | None
    input_schema: pl.Schema
    out_schema: pl.Schema
    fanout = 1


@dataclass(frozen=True)
class JoinStage:
    """The equi-join ``node`` of the left branches' rows (``left_schema``) with the right
    branches' (``right_schema``); ``renamed`` maps each kept right column to its output name."""

    node: JoinNode
    left_schema: pl.Schema
    right_schema: pl.Schema
    renamed: dict[str, str]
    fanout = 1

    def side_keys(self, side: int) -> tuple[str, ...]:
        return self.node.left_on if side == 0 else self.node.right_on


@dataclass(frozen=True)
class TopKStage:
    """The first ``node.limit`` rows of the branches' rows (``schema``) in ``node``'s order,
    ties in input order (branch, ``tiebreak`` columns, partition, position)."""

    node: SortNode
    schema: pl.Schema
    tiebreak: tuple[str, ...] = ()
    fanout = 1


@dataclass(frozen=True)
class SortStage:
    """Every row of the branches' rows (``schema``) in ``node``'s order, ties in input order
    (as :class:`TopKStage`): range-partitioned, each reduce task one range
    (:mod:`strom.batch.sort`), so the output files are in order."""

    node: SortNode
    schema: pl.Schema
    tiebreak: tuple[str, ...] = ()
    fanout = 1


@dataclass(frozen=True)
class DistinctStage:
    """The first row, in input order, of each distinct ``subset`` value of the branches' rows
    (``schema``; every column if ``node.subset`` is empty)."""

    node: DistinctNode
    schema: pl.Schema
    tiebreak: tuple[str, ...] = ()
    fanout = 1

    @property
    def subset(self) -> list[str]:
        return list(self.node.subset) or list(self.schema)


Stage = WindowStage | AggStage | JoinStage | TopKStage | SortStage | DistinctStage


@dataclass(frozen=True)
class Output:
    """Where tasks write: straight into a :class:`FileSink`'s directory (``format``), or Arrow
    IPC files the driver hands to the sink at the job's commit (``directory`` None)."""

    directory: str | None
    format: str


@dataclass(frozen=True)
class StageSpec:
    """Stage ``index`` of a job: map tasks over ``branches``, then the shuffle ``stage`` (None:
    map-only, which only a job's last stage can be)."""

    index: int
    branches: tuple[Branch, ...]
    stage: Stage | None


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to run a job's tasks (no sink object: the driver owns it)."""

    index: int
    stages: tuple[StageSpec, ...]
    """Producers before their consumers; the last writes the job's output."""
    post: tuple[StatelessNode, ...]
    """The steps after the last stage's shuffle stage (run in its reduce tasks)."""
    output: Output

    def is_last(self, stage: int) -> bool:
        return stage == len(self.stages) - 1


@dataclass(frozen=True)
class SinkJob:
    spec: JobSpec
    sink: Sink


def lower(plan: Plan) -> list[SinkJob]:
    """The plan's jobs, one per sink, in the plan's sink order."""
    first: dict[SourceNode, int] = {}
    offset = 0
    for source in plan.sources():
        first[source] = offset
        offset += source.source.partition_count()
    return [_lower_sink(plan, i, sink, first) for i, sink in enumerate(plan.sinks)]


def _lower_sink(plan: Plan, index: int, node: SinkNode, first: dict[SourceNode, int]) -> SinkJob:
    post: list[StatelessNode] = []
    current: PlanNode = node.input
    lowering = _Lowering(plan, first, needed(plan, node))
    while True:
        match current:
            case FilterNode() | WithColumnsNode() | SelectNode() | MapBatchesNode() | MapNode():
                post.append(current)
                current = current.input
            case KeyByNode():
                current = current.input
            case WindowAggNode() | KeyedAggNode() | SortNode() | DistinctNode() | JoinNode():
                lowering.stage(current)
                break
            case _:
                # no stage right before the sink: a map-only last stage over the branches
                post = []
                branches = lowering.branches(node.input)
                lowering.stages.append(StageSpec(len(lowering.stages), tuple(branches), None))
                break
    sink = node.sink
    output = Output(None, "ipc")
    if isinstance(sink, FileSink):
        if sink.guarantee != "at-least-once":
            raise PlanError(
                f"{sink!r}: the local engine commits files per task and per job (_SUCCESS); "
                "use the default guarantee"
            )
        output = Output(str(sink.directory), sink.format)
    spec = JobSpec(index, tuple(lowering.stages), tuple(reversed(post)), output)
    return SinkJob(spec, sink)


StageNode = WindowAggNode | KeyedAggNode | SortNode | DistinctNode | JoinNode


class _Lowering:
    """One sink path's stages, each lowered once (``memo``), after the stages it reads."""

    def __init__(
        self, plan: Plan, first: dict[SourceNode, int], need: dict[PlanNode, Need]
    ) -> None:
        self.plan = plan
        self.first = first
        self.need = need
        self.stages: list[StageSpec] = []
        self.memo: dict[PlanNode, int] = {}

    def stage(self, node: StageNode) -> int:
        """The index of ``node``'s stage (lowered, with its producers, if not yet)."""
        if node in self.memo:
            return self.memo[node]
        plan = self.plan
        stage: Stage
        match node:
            case WindowAggNode():
                branches = self.projected(node.input)
                _no_order_over_results(node.aggs, branches)
                stage = _window(plan, node)
            case KeyedAggNode():
                branches = self.projected(node.input)
                _no_order_over_results(node.aggs, branches)
                stage = _keyed_agg(plan, node)
            case SortNode():
                tie = _tiebreak(self.branches(node.input))
                branches = self.projected(node.input, tie)
                schema = _restrict(_schema(plan, node.input, "a sort"), branches[0].columns)
                if node.limit is None:
                    stage = SortStage(node, schema, tie)
                else:
                    stage = TopKStage(node, schema, tie)
            case DistinctNode():
                tie = _tiebreak(self.branches(node.input))
                branches = self.projected(node.input, tie)
                schema = _restrict(_schema(plan, node.input, "distinct"), branches[0].columns)
                stage = DistinctStage(node, schema, tie)
            case JoinNode():
                left, right = self.projected(node.left), self.projected(node.right)
                branches = [*left, *(replace(b, side=1) for b in right)]
                stage = _join(plan, node, left[0].columns, right[0].columns)
            case _:
                assert_never(node)
        index = len(self.stages)
        self.stages.append(StageSpec(index, tuple(branches), stage))
        self.memo[node] = index
        return index

    def projected(self, node: PlanNode, extra: Sequence[str] = ()) -> list[Branch]:
        """The branches into ``node``'s consumer, each delivering what is read after ``node``
        (and ``extra``)."""
        columns = in_order(self.need.get(node), self.plan.schemas.get(node), extra)
        return [replace(b, columns=columns) for b in self.branches(node)]

    def branches(self, node: PlanNode) -> list[Branch]:
        """Every input-to-``node`` path of stateless steps, as branches (exhaustive over
        nodes)."""
        match node:
            case SourceNode():
                source = node.source
                if not isinstance(source, FileSource):
                    raise PlanError(
                        f"source {node.name!r} ({type(source).__name__}): the local engine "
                        "reads FileSource (Parquet, CSV, NDJSON) only; run it without "
                        "--engine local"
                    )
                return [Branch(source, node.name, self.first[node], ())]
            case FilterNode() | WithColumnsNode() | SelectNode() | MapBatchesNode() | MapNode():
                return [
                    Branch(b.source, b.source_name, b.first_partition, (*b.steps, node))
                    for b in self.branches(node.input)
                ]
            case KeyByNode():
                return self.branches(node.input)
            case UnionNode():
                return [b for branch in node.branches for b in self.branches(branch)]
            case WindowAggNode() | KeyedAggNode() | JoinNode() | SortNode() | DistinctNode():
                index = self.stage(node)
                produced = self.stages[index].stage
                schema = _schema(self.plan, node, node.label)
                order: tuple[str, ...] = ()
                if isinstance(produced, WindowStage):
                    order = ("window_end", "window_start", *produced.keys)
                elif isinstance(produced, AggStage):
                    order = produced.keys
                return [Branch(StageInput(index, schema, order), node.label, -1, ())]
            case (
                ProcessNode()
                | LookupJoinNode()
                | IntervalJoinNode()
                | IntervalJoinLateNode()
                | LateNode()
                | PredictNode()
                | AsofJoinNode()
            ):
                raise PlanError(
                    f"{node.label}: not supported by the local engine yet; run the pipeline "
                    "without --engine local"
                )
            case SinkNode():
                raise AssertionError("a sink has no downstream node")
            case _:
                assert_never(node)


def _kept_order(branch: Branch) -> tuple[str, ...] | None:
    """The columns ordering ``branch``'s rows as the single-process runner does (empty: its
    positions do), or None when its steps may have dropped or changed them."""
    if not isinstance(branch.source, StageInput):
        return ()
    order = branch.source.order
    for step in branch.steps:
        if not order:
            break
        match step:
            case FilterNode():
                continue
            case WithColumnsNode():
                written = {e.meta.output_name() for e in step.exprs}
                if written & set(order):
                    return None
            case SelectNode():
                bare = {
                    e.meta.output_name()
                    for e in step.exprs
                    if e.meta.is_column() and not e.meta.has_multiple_outputs()
                }
                if not set(order) <= bare:
                    return None
            case MapBatchesNode() | MapNode():
                return None
            case _:
                assert_never(step)
    return order


def _tiebreak(branches: Sequence[Branch]) -> tuple[str, ...]:
    """The columns that break ties (after the branch, before the position): an aggregation's
    order, when every branch is that aggregation's results with those columns kept; else none
    (a file's rows are in position order already)."""
    orders = {_kept_order(b) for b in branches}
    if len(orders) == 1:
        (order,) = orders
        return order or ()
    return ()


def _no_order_over_results(aggs: Sequence[Aggregation], branches: Sequence[Branch]) -> None:
    for b in branches:
        if isinstance(b.source, StageInput) and b.source.order and needs_positions(aggs):
            raise PlanError(
                f"first/last/approx_quantile over the results of {b.source_name}: they pick by "
                "its output order, which the local engine's tasks do not know; run the "
                "pipeline without --engine local"
            )


def _window(plan: Plan, node: WindowAggNode) -> WindowStage:
    if not isinstance(node.window, Tumbling | Hopping):
        raise PlanError(
            f"window {node.window!r}: the local engine runs tumbling and hopping windows; "
            "session windows need the default engine (strom run without --engine local)"
        )
    ts_column = plan.timestamps.get(node.input)
    schema = plan.schemas.get(node.input)
    if ts_column is None:
        raise PlanError("a window needs an event-time column (Pipeline.source(timestamp=...))")
    if schema is None:
        raise PlanError(
            "the local engine needs the window's input schema before running: give "
            "map_batches(...) before the window its output schema (schema=...)"
        )
    out = window_schema(node.keys, node.aggs, schema)
    return WindowStage(node.keys, node.window, node.aggs, ts_column, schema, out)


def _keyed_agg(plan: Plan, node: KeyedAggNode) -> AggStage:
    for a in node.aggs:
        if isinstance(a, ApproxQuantile):
            raise PlanError(
                f"agg.approx_quantile({a.column!r}, {a.q}) in a keyed aggregation: its sample "
                "is drawn by each event's position in its source partition, which the local "
                "engine's tasks do not know; run the pipeline without --engine local"
            )
    schema = _schema(plan, node.input, "a keyed aggregation")
    out = keyed_agg_schema(node.keys, node.aggs, schema)
    return AggStage(node.keys, node.aggs, plan.timestamps.get(node.input), schema, out)


def _join(
    plan: Plan,
    node: JoinNode,
    left_columns: tuple[str, ...] | None,
    right_columns: tuple[str, ...] | None,
) -> JoinStage:
    """The join of the inputs' delivered columns (a right column keeps the name it has in the
    join of all columns)."""
    left = _schema(plan, node.left, "a join")
    right = _schema(plan, node.right, "a join")
    renamed = node.output_columns(list(left), list(right))
    right = _restrict(right, right_columns)
    renamed = {c: name for c, name in renamed.items() if c in right}
    return JoinStage(node, _restrict(left, left_columns), right, renamed)


def _restrict(schema: pl.Schema, columns: tuple[str, ...] | None) -> pl.Schema:
    return schema if columns is None else pl.Schema({c: schema[c] for c in columns})


def _schema(plan: Plan, node: PlanNode, what: str) -> pl.Schema:
    schema = plan.schemas.get(node)
    if schema is None:
        raise PlanError(
            f"the local engine needs the input schema of {what} before running: give "
            "map_batches(...) before it its output schema (schema=...)"
        )
    return schema
