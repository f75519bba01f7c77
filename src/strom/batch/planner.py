"""Lowering a plan to local-engine jobs: one :class:`SinkJob` per sink.

A job is a map stage over files, then, if the sink's path holds a shuffle stage, a reduce stage
per shuffle bucket. What the engine runs, per sink path (anything else is a
:class:`~strom.pipeline.validate.PlanError` naming the node)::

    FileSource -> stateless steps / key_by / union -> [stage -> stateless steps] -> sink

where the one stage is a tumbling or hopping window aggregation (:class:`WindowStage`), a keyed
aggregation without a window (:class:`AggStage`), an equi-join of two such inputs
(:class:`JoinStage`), a top-k (:class:`TopKStage`: a sort with a limit) or a distinct
(:class:`DistinctStage`). A stage over another stage's results (a join of aggregations, say) is
a PlanError: each sink path has one shuffle. So is a sort without a limit (its one reduce task
would hold the whole input).

Every path from a source to the stage (or to the sink) is a :class:`Branch`: the source and
the stateless steps applied to its rows in order, so a union is the branches of its inputs; a
join's branches carry the side they feed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import assert_never

import polars as pl

from strom.connectors.files import FileSink, FileSource
from strom.engine.aggregations import Aggregation, ApproxQuantile
from strom.engine.contracts import Sink
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
class Branch:
    """Rows of ``source`` through ``steps``; its partitions are numbered from
    ``first_partition`` (as the single-process runner numbers every source's partitions).
    ``side`` is the join input it feeds (0 left, 1 right; 0 without a join)."""

    source: FileSource
    source_name: str
    first_partition: int
    steps: tuple[StatelessNode, ...]
    side: int = 0


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
    ties in input order (branch, partition, position)."""

    node: SortNode
    schema: pl.Schema
    fanout = 1


@dataclass(frozen=True)
class DistinctStage:
    """The first row, in input order, of each distinct ``subset`` value of the branches' rows
    (``schema``; every column if ``node.subset`` is empty)."""

    node: DistinctNode
    schema: pl.Schema
    fanout = 1

    @property
    def subset(self) -> list[str]:
        return list(self.node.subset) or list(self.schema)


Stage = WindowStage | AggStage | JoinStage | TopKStage | DistinctStage


@dataclass(frozen=True)
class Output:
    """Where tasks write: straight into a :class:`FileSink`'s directory (``format``), or Arrow
    IPC files the driver hands to the sink at the job's commit (``directory`` None)."""

    directory: str | None
    format: str


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to run a job's tasks (no sink object: the driver owns it)."""

    index: int
    branches: tuple[Branch, ...]
    stage: Stage | None
    """The shuffle stage (None: map tasks write the output)."""
    post: tuple[StatelessNode, ...]
    output: Output


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
    stage: Stage | None = None
    while True:
        match current:
            case FilterNode() | WithColumnsNode() | SelectNode() | MapBatchesNode() | MapNode():
                post.append(current)
                current = current.input
            case KeyByNode():
                current = current.input
            case WindowAggNode():
                stage = _window(plan, current)
                branches = _branches(current.input, first)
                break
            case KeyedAggNode():
                stage = _keyed_agg(plan, current)
                branches = _branches(current.input, first)
                break
            case SortNode():
                stage = TopKStage(current, _schema(plan, current.input, "top_k"))
                if current.limit is None:
                    raise PlanError(
                        "sort() without a limit: the local engine runs top_k(k, by=...) (each "
                        "map task keeps its k first rows, one reduce task merges them); run a "
                        "full sort without --engine local"
                    )
                branches = _branches(current.input, first)
                break
            case DistinctNode():
                stage = DistinctStage(current, _schema(plan, current.input, "distinct"))
                branches = _branches(current.input, first)
                break
            case JoinNode():
                stage = _join(plan, current)
                branches = [
                    *_branches(current.left, first),
                    *(replace(b, side=1) for b in _branches(current.right, first)),
                ]
                break
            case _:
                break
    if stage is None:
        branches = _branches(node.input, first)
        post = []
    sink = node.sink
    output = Output(None, "ipc")
    if isinstance(sink, FileSink):
        if sink.guarantee != "at-least-once":
            raise PlanError(
                f"{sink!r}: the local engine commits files per task and per job (_SUCCESS); "
                "use the default guarantee"
            )
        output = Output(str(sink.directory), sink.format)
    spec = JobSpec(index, tuple(branches), stage, tuple(reversed(post)), output)
    return SinkJob(spec, sink)


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


def _join(plan: Plan, node: JoinNode) -> JoinStage:
    left = _schema(plan, node.left, "a join")
    right = _schema(plan, node.right, "a join")
    renamed = node.output_columns(list(left), list(right))
    return JoinStage(node, left, right, renamed)


def _schema(plan: Plan, node: PlanNode, what: str) -> pl.Schema:
    schema = plan.schemas.get(node)
    if schema is None:
        raise PlanError(
            f"the local engine needs the input schema of {what} before running: give "
            "map_batches(...) before it its output schema (schema=...)"
        )
    return schema


def _branches(node: PlanNode, first: dict[SourceNode, int]) -> list[Branch]:
    """Every source-to-``node`` path of stateless steps, as branches (exhaustive over nodes)."""
    match node:
        case SourceNode():
            source = node.source
            if not isinstance(source, FileSource):
                raise PlanError(
                    f"source {node.name!r} ({type(source).__name__}): the local engine reads "
                    "FileSource (Parquet, CSV, NDJSON) only; run it without --engine local"
                )
            return [Branch(source, node.name, first[node], ())]
        case FilterNode() | WithColumnsNode() | SelectNode() | MapBatchesNode() | MapNode():
            return [
                Branch(b.source, b.source_name, b.first_partition, (*b.steps, node))
                for b in _branches(node.input, first)
            ]
        case KeyByNode():
            return _branches(node.input, first)
        case UnionNode():
            return [b for branch in node.branches for b in _branches(branch, first)]
        case WindowAggNode() | KeyedAggNode() | JoinNode() | SortNode() | DistinctNode():
            raise PlanError(
                f"{node.label} feeding another stage (window, aggregation, join, top-k, "
                "distinct) or a union: the local engine runs one stage per sink path, last "
                "before the sink and its stateless steps; run the pipeline without --engine local"
            )
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
                f"{node.label}: not supported by the local engine yet; run the pipeline without "
                "--engine local"
            )
        case SinkNode():
            raise AssertionError("a sink has no downstream node")
        case _:
            assert_never(node)
