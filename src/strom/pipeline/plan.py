"""The logical plan: immutable nodes forming a DAG from sources to sinks.

Nodes compare by identity (``eq=False``): Polars expressions overload ``==``, and two equal-looking
branches of a pipeline are still two branches. The plan knows no executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import polars as pl

from strom.engine.aggregations import Aggregation
from strom.engine.contracts import LookupTable, Sink, Source
from strom.engine.scoring import ModelProvider
from strom.pipeline.process import FlatMapFn, MapFn, Ordering, ProcessFunction
from strom.pipeline.windows import WindowSpec

EmitMode = Literal["final", "update"]
JoinSide = Literal["left", "right"]
JoinHow = Literal["inner", "left", "semi", "anti"]
JOIN_HOWS: tuple[JoinHow, ...] = ("inner", "left", "semi", "anti")

JOIN_TIME = "join_time"
"""The interval join's output column holding its event time, ``max(left ts, right ts)`` in ms."""


@dataclass(frozen=True, eq=False)
class Node:
    """Base of every plan node; ``inputs`` are the upstream nodes.

    The concrete nodes are exactly the members of :data:`PlanNode`: backends lower a plan with
    one ``match`` over that union ending in ``assert_never``, so adding a node to it makes mypy
    point at every backend that does not handle it yet.
    """

    @property
    def inputs(self) -> tuple[PlanNode, ...]:
        return ()

    @property
    def label(self) -> str:
        return type(self).__name__.removesuffix("Node")


@dataclass(frozen=True, eq=False)
class SourceNode(Node):
    """Reads ``source``; ``timestamp`` names the event-time column (Int64 ms or Datetime)."""

    source: Source
    timestamp: str | None
    max_out_of_orderness_ms: int = 0
    idle_timeout_ms: int | None = None
    name: str = "source"


@dataclass(frozen=True, eq=False)
class UnaryNode(Node):
    input: PlanNode

    @property
    def inputs(self) -> tuple[PlanNode, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class FilterNode(UnaryNode):
    predicate: pl.Expr


@dataclass(frozen=True, eq=False)
class WithColumnsNode(UnaryNode):
    exprs: tuple[pl.Expr, ...]


@dataclass(frozen=True, eq=False)
class SelectNode(UnaryNode):
    exprs: tuple[pl.Expr, ...]


@dataclass(frozen=True, eq=False)
class MapBatchesNode(UnaryNode):
    """``fn`` maps a batch to a batch; ``schema`` declares its output (unknown if ``None``).

    Executors may call ``fn`` on batches of any size (the bounded runner passes a whole
    partition), so ``fn`` must not depend on where batch boundaries fall.
    """

    fn: Callable[[pl.DataFrame], pl.DataFrame]
    schema: pl.Schema | None = None


@dataclass(frozen=True, eq=False)
class MapNode(UnaryNode):
    """Per-record ``fn``: row dict to row dict (``flat=False``) or to an iterable of row dicts
    (``flat=True``); the output has ``schema``. Row order within a batch is kept."""

    fn: MapFn | FlatMapFn
    schema: pl.Schema
    flat: bool = False


@dataclass(frozen=True, eq=False)
class ProcessNode(UnaryNode):
    """A keyed :class:`ProcessFunction`; its output rows have ``schema``."""

    keys: tuple[str, ...]
    fn: ProcessFunction
    schema: pl.Schema
    ordering: Ordering = "event_time"


@dataclass(frozen=True, eq=False)
class KeyByNode(UnaryNode):
    keys: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class WindowAggNode(UnaryNode):
    """Keyed (or global, with no keys) window aggregation; the main output is the results."""

    keys: tuple[str, ...]
    window: WindowSpec
    aggs: tuple[Aggregation, ...]
    allowed_lateness_ms: int = 0
    emit: EmitMode = "final"


@dataclass(frozen=True, eq=False)
class KeyedAggNode(UnaryNode):
    """Aggregation per key over all time (no window): an updating table.

    Output columns: the keys, one column per aggregation, ``is_update``. Bounded runs give one
    row per key (``is_update=False``); the streaming runtime emits, after each batch, the new
    value of every key the batch changed (``is_update=True`` once the key has been emitted),
    so the latest row per key is the bounded result. It has no event time.
    """

    keys: tuple[str, ...]
    aggs: tuple[Aggregation, ...]


@dataclass(frozen=True, eq=False)
class JoinNode(Node):
    """Equi-join of ``left`` and ``right`` on ``left_on == right_on`` (null keys never match).

    ``how``: ``inner`` (every matching pair), ``left`` (and unmatched left rows, right columns
    null), ``semi`` (left rows with a match, once each), ``anti`` (left rows without one).
    Output columns (:meth:`output_columns`): every left column, then (inner and left joins)
    every right column but a key named like the left key it pairs with, a right name taken by a
    left column getting ``suffix``. Event time: the left input's. The streaming runtime runs
    it only with ``ttl_ms`` (each row is held that long, in processing time); bounded runs
    join the whole inputs and ignore it.
    """

    left: PlanNode
    right: PlanNode
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: JoinHow = "inner"
    suffix: str = "_right"
    ttl_ms: int | None = None

    @property
    def inputs(self) -> tuple[PlanNode, ...]:
        return (self.left, self.right)

    def output_columns(self, left: Sequence[str], right: Sequence[str]) -> dict[str, str]:
        """Each kept right column's output name, in order (none for semi and anti joins).

        Raises ``ValueError`` naming the column when two output columns would share a name.
        """
        if self.how in ("semi", "anti"):
            return {}
        dropped = {r for lk, r in zip(self.left_on, self.right_on, strict=True) if lk == r}
        taken = set(left)
        names = {c: c + self.suffix if c in taken else c for c in right if c not in dropped}
        seen = set(taken)
        for column, name in names.items():
            if name in seen:
                raise ValueError(
                    f"right column {column!r} would be named {name!r}, which is already an "
                    "output column; pass another suffix= or rename it"
                )
            seen.add(name)
        return names


@dataclass(frozen=True, eq=False)
class SortNode(UnaryNode):
    """Rows ordered by ``by`` (``descending`` per column; nulls first unless ``nulls_last``),
    ties kept in input order; only the first ``limit`` rows if set (top-k). Bounded runs only."""

    by: tuple[str, ...]
    descending: tuple[bool, ...]
    nulls_last: bool = False
    limit: int | None = None


@dataclass(frozen=True, eq=False)
class DistinctNode(UnaryNode):
    """The first row (in input order) of each distinct value of ``subset`` (every column if
    empty), in input order. Bounded runs only."""

    subset: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class LookupJoinNode(UnaryNode):
    """Left join of each row with ``table``'s row whose key equals the row's ``on`` column;
    adds ``columns`` (null when the key is missing). Rows from the table are cached for
    ``ttl_ms`` of processing time."""

    table: LookupTable
    on: str
    columns: tuple[str, ...]
    ttl_ms: int


@dataclass(frozen=True, eq=False)
class IntervalJoinNode(Node):
    """Inner join of ``left`` and ``right`` rows whose keys are equal and whose event times
    satisfy ``left_ts + lower_ms <= right_ts <= left_ts + upper_ms`` (``None``: unbounded).

    Output columns (:meth:`output_columns`): every left column, then every right column but a
    key named like the left key it pairs with, a right name taken by a left column or by
    :data:`JOIN_TIME` getting ``suffix``, then :data:`JOIN_TIME` (Int64 epoch ms), the
    output's event time. A left event-time column itself named :data:`JOIN_TIME` (the left
    input is a join) is replaced by the new one.
    """

    left: PlanNode
    right: PlanNode
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    lower_ms: int | None
    upper_ms: int | None
    suffix: str = "_right"

    @property
    def inputs(self) -> tuple[PlanNode, ...]:
        return (self.left, self.right)

    def output_columns(
        self, left: Sequence[str], left_ts: str, right: Sequence[str]
    ) -> tuple[list[str], dict[str, str]]:
        """The left columns kept, and each kept right column's output name (in order).

        Raises ``ValueError`` naming the column when two output columns would share a name.
        """
        if JOIN_TIME in left and left_ts != JOIN_TIME:
            raise ValueError(
                f"left column {JOIN_TIME!r} is reserved for the join's event time; rename it"
            )
        kept_left = [c for c in left if c != JOIN_TIME]
        dropped = {r for lk, r in zip(self.left_on, self.right_on, strict=True) if lk == r}
        taken = {*kept_left, JOIN_TIME}
        names = {c: c + self.suffix if c in taken else c for c in right if c not in dropped}
        seen = set(taken)
        for column, name in names.items():
            if name in seen:
                raise ValueError(
                    f"right column {column!r} would be named {name!r}, which is already an "
                    "output column; pass another suffix= or rename it"
                )
            seen.add(name)
        return kept_left, names


@dataclass(frozen=True, eq=False)
class AsofJoinNode(Node):
    """Each ``left`` row (an event) joined to the ``right`` row (a feature row) with equal keys
    that was available latest at the event's time: the largest right event time ``a <= t``
    (the right stream's event time is when its row became available: a window result's
    ``window_end``), nothing if ``t - a > ttl_ms`` (``None``: no limit). A left join: every
    left row once; no match gives nulls. Right rows of equal keys and time: the one that came
    last counts. Null keys never match.

    Output columns (:meth:`output_columns`): every left column, then ``columns`` of the right
    (``None``: every right column but its keys), a name taken by a left column getting
    ``suffix``. Event time: the left input's. Its late outputs are
    :class:`IntervalJoinLateNode` of this node (``left``: events, ``right``: feature rows).
    """

    left: PlanNode
    right: PlanNode
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    ttl_ms: int | None
    columns: tuple[str, ...] | None = None
    suffix: str = "_right"

    @property
    def inputs(self) -> tuple[PlanNode, ...]:
        return (self.left, self.right)

    def output_columns(self, left: Sequence[str], right: Sequence[str]) -> dict[str, str]:
        """Each kept right column's output name, in order.

        Raises ``ValueError`` naming the column when two output columns would share a name,
        or a column of ``columns`` is not a right column.
        """
        if self.columns is None:
            wanted = [c for c in right if c not in self.right_on]
        else:
            missing = [c for c in self.columns if c not in right]
            if missing:
                raise ValueError(
                    f"columns {missing} are not columns of the right stream {list(right)}"
                )
            wanted = list(self.columns)
        taken = set(left)
        names = {c: c + self.suffix if c in taken else c for c in wanted}
        seen = set(taken)
        for column, name in names.items():
            if name in seen:
                raise ValueError(
                    f"right column {column!r} would be named {name!r}, which is already an "
                    "output column; pass another suffix= or rename it"
                )
            seen.add(name)
        return names


@dataclass(frozen=True, eq=False)
class IntervalJoinLateNode(UnaryNode):
    """Rows of one ``side`` of ``input`` (an :class:`IntervalJoinNode` or an
    :class:`AsofJoinNode`) that arrived too late to be joined: behind the join's watermark,
    where partners may already have been purged (or, for an as-of join, joined without them)."""

    side: JoinSide


@dataclass(frozen=True, eq=False)
class LateNode(UnaryNode):
    """The late side output of ``input`` (a :class:`WindowAggNode`)."""


@dataclass(frozen=True, eq=False)
class UnionNode(Node):
    branches: tuple[PlanNode, ...]

    @property
    def inputs(self) -> tuple[PlanNode, ...]:
        return self.branches


@dataclass(frozen=True, eq=False)
class PredictNode(UnaryNode):
    """Scores each row with ``models``' model ``model`` as ``ref`` names it (a version or an
    alias), into Float64 column ``output``, plus ``model_name``, ``model_version`` and
    ``feature_version``; a batch the model raises on goes to ``dead_letter``."""

    models: ModelProvider
    model: str
    ref: str | int
    output: str
    feature_version: str | None
    dead_letter: Sink | None


@dataclass(frozen=True, eq=False)
class SinkNode(UnaryNode):
    sink: Sink


PlanNode: TypeAlias = (
    SourceNode
    | FilterNode
    | WithColumnsNode
    | SelectNode
    | MapBatchesNode
    | MapNode
    | ProcessNode
    | KeyByNode
    | WindowAggNode
    | KeyedAggNode
    | LookupJoinNode
    | JoinNode
    | SortNode
    | DistinctNode
    | IntervalJoinNode
    | AsofJoinNode
    | IntervalJoinLateNode
    | LateNode
    | UnionNode
    | PredictNode
    | SinkNode
)
"""Every concrete plan node (the closed set a backend's ``match`` must cover)."""

StatelessNode: TypeAlias = FilterNode | WithColumnsNode | SelectNode | MapBatchesNode | MapNode
"""The nodes that are a function of each batch alone (see ``strom.engine.transforms``)."""

ExprNode: TypeAlias = FilterNode | WithColumnsNode | SelectNode
"""The stateless nodes made of Polars expressions (they run lazily as well as eagerly)."""


@dataclass(frozen=True)
class Plan:
    """A validated plan: its sinks, from which every reachable node is found."""

    sinks: tuple[SinkNode, ...]
    schemas: dict[Node, pl.Schema | None] = field(default_factory=dict, compare=False)
    """Each node's output schema where knowable before running."""
    timestamps: dict[Node, str | None] = field(default_factory=dict, compare=False)
    """Each node's event-time column (``None`` where there is none). Window results carry
    ``window_end``: when a window fires, every event before its end has arrived."""

    def nodes(self) -> list[PlanNode]:
        """Every node, each after all of its inputs (a topological order)."""
        return topological(self.sinks)

    def sources(self) -> list[SourceNode]:
        return [n for n in self.nodes() if isinstance(n, SourceNode)]


def topological(roots: Sequence[PlanNode]) -> list[PlanNode]:
    order: list[PlanNode] = []
    seen: set[int] = set()

    def visit(node: PlanNode) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for upstream in node.inputs:
            visit(upstream)
        order.append(node)

    for root in roots:
        visit(root)
    return order


def walk(node: PlanNode) -> Iterator[PlanNode]:
    """``node`` and everything upstream of it."""
    yield from topological((node,))
