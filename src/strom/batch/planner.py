"""Lowering a plan to local-engine jobs: one :class:`SinkJob` per sink.

A job is a map stage over files, then, if the sink's path holds a window, a reduce stage per
shuffle bucket. What the engine runs today, per sink path (anything else is a
:class:`~strom.pipeline.validate.PlanError` naming the node)::

    FileSource -> stateless steps / key_by / union -> [tumbling|hopping window agg ->
    stateless steps] -> sink

Every path from a source to the window (or to the sink) is a :class:`Branch`: the source and
the stateless steps applied to its rows in order, so a union is the branches of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

import polars as pl

from strom.connectors.files import FileSink, FileSource
from strom.engine.aggregations import Aggregation
from strom.engine.contracts import Sink
from strom.engine.schemas import window_schema
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
    ``first_partition`` (as the single-process runner numbers every source's partitions)."""

    source: FileSource
    source_name: str
    first_partition: int
    steps: tuple[StatelessNode, ...]


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
    window: WindowStage | None
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
    window: WindowStage | None = None
    while True:
        match current:
            case FilterNode() | WithColumnsNode() | SelectNode() | MapBatchesNode() | MapNode():
                post.append(current)
                current = current.input
            case KeyByNode():
                current = current.input
            case WindowAggNode():
                window = _window(plan, current)
                current = current.input
                break
            case _:
                break
    if window is None:
        branches = _branches(node.input, first)
        post = []
    else:
        branches = _branches(current, first)
    sink = node.sink
    output = Output(None, "ipc")
    if isinstance(sink, FileSink):
        if sink.guarantee != "at-least-once":
            raise PlanError(
                f"{sink!r}: the local engine commits files per task and per job (_SUCCESS); "
                "use the default guarantee"
            )
        output = Output(str(sink.directory), sink.format)
    spec = JobSpec(index, tuple(branches), window, tuple(reversed(post)), output)
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
        case WindowAggNode():
            raise PlanError(
                "a window over a window's results: the local engine runs one aggregation per "
                "sink path"
            )
        case (
            ProcessNode()
            | LookupJoinNode()
            | IntervalJoinNode()
            | IntervalJoinLateNode()
            | LateNode()
            | KeyedAggNode()
            | JoinNode()
            | SortNode()
            | DistinctNode()
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
