"""Worker ``i`` of ``N``'s plan: its share of every source, every keyed input through a shuffle.

:func:`split_plan` cuts the plan before every keyed operator (windows, keyed aggregations,
process functions, interval and as-of joins; equi-joins too, which the streaming runtime then
refuses):
the rows entering it go to a :class:`~strom.runtime.distributed.shuffle.Shuffle` writer by key,
and the operator reads this worker's partitions of the cut instead. Two keyed operators
re-keying one stream by the same columns share a cut. The rewritten plan is an
ordinary plan, run by one :class:`~strom.runtime.executor.StreamingExecutor`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, assert_never

from strom.connectors.kafka.transaction import TransactionScope
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
    UnionNode,
    WindowAggNode,
    WithColumnsNode,
    walk,
)
from strom.pipeline.validate import PlanError, validate
from strom.runtime.distributed.shares import ProgressFeed, SharedSource
from strom.runtime.distributed.shuffle import KafkaShuffle, Shuffle, ShuffleWriter
from strom.runtime.watermarks import WatermarkTracker

__all__ = [
    "Cut",
    "CutWriter",
    "WorkerConfig",
    "create_repartition_topics",
    "default_shuffle",
    "find_cuts",
    "owned",
    "repartition_topics",
    "split_plan",
]

Clock = Callable[[], float]


@dataclass(frozen=True)
class WorkerConfig:
    """Who this worker is and where its run's repartition topics live.

    ``partitions`` is each repartition topic's partition count when it has to be created
    (default: the most partitions of any source, and at least ``workers``); an existing topic
    keeps its count.
    """

    index: int
    workers: int
    app_id: str
    run_id: str
    bootstrap_servers: str | None
    partitions: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.workers:
            raise ValueError(f"worker index {self.index} is not in 0..{self.workers - 1}")


def owned(count: int, index: int, workers: int) -> list[int]:
    """The partitions of a ``count``-partition topic that worker ``index`` of ``workers`` reads."""
    return [p for p in range(count) if p % workers == index]


@dataclass(frozen=True)
class Cut:
    """A repartition edge: the rows of ``upstream`` (a node of the original plan), by ``keys``."""

    number: int
    upstream: PlanNode
    keys: tuple[str, ...]

    def topic(self, app_id: str) -> str:
        return f"{app_id}-repartition-{self.number}"


def find_cuts(plan: Plan) -> list[Cut]:
    """Every repartition edge of ``plan``, numbered in plan order (the same in every worker)."""
    cuts: dict[tuple[int, tuple[str, ...]], Cut] = {}
    for node in plan.nodes():
        for upstream, keys in _keyed_inputs(node):
            key = (id(upstream), keys)
            if key not in cuts:
                cuts[key] = Cut(len(cuts) + 1, upstream, keys)
    return list(cuts.values())


def _keyed_inputs(node: PlanNode) -> list[tuple[PlanNode, tuple[str, ...]]]:
    """The (rows to repartition, key columns) edges into a keyed operator; a ``key_by`` step
    before it is skipped (the downstream stage re-applies it)."""

    def base(n: PlanNode) -> PlanNode:
        return n.input if isinstance(n, KeyByNode) else n

    match node:
        case WindowAggNode() | ProcessNode() | KeyedAggNode():
            return [(base(node.input), node.keys)]
        case IntervalJoinNode() | JoinNode() | AsofJoinNode():
            return [(base(node.left), node.left_on), (base(node.right), node.right_on)]
        case (
            SourceNode()
            | FilterNode()
            | WithColumnsNode()
            | SelectNode()
            | MapBatchesNode()
            | MapNode()
            | LookupJoinNode()
            | KeyByNode()
            | LateNode()
            | IntervalJoinLateNode()
            | UnionNode()
            | PredictNode()
            | SinkNode()
            | SortNode()
            | DistinctNode()
        ):
            return []
        case _:
            assert_never(node)


def repartition_topics(plan: Plan, app_id: str) -> list[str]:
    return [cut.topic(app_id) for cut in find_cuts(plan)]


def default_shuffle(plan: Plan, config: WorkerConfig) -> Shuffle | None:
    """Repartition topics on ``config.bootstrap_servers`` (``None`` if the plan needs none)."""
    if not find_cuts(plan):
        return None
    if config.bootstrap_servers is None:
        raise PlanError(
            "the plan re-keys its stream, so its workers need a Kafka cluster for the "
            "repartition topics: pass --bootstrap-server (or read from a KafkaSource)"
        )
    return KafkaShuffle(config.bootstrap_servers)


def create_repartition_topics(
    plan: Plan, config: WorkerConfig, shuffle: Shuffle | None = None
) -> int:
    """Create ``plan``'s repartition topics if missing; their partition count (0: none needed).

    Topics are created with ``config.partitions`` partitions, by default the most partitions of
    any source and at least one per worker; existing topics keep theirs. ``shuffle`` defaults
    to :func:`default_shuffle`.
    """
    topics = repartition_topics(plan, config.app_id)
    if not topics:
        return 0
    shuffle = shuffle or default_shuffle(plan, config)
    assert shuffle is not None  # the plan has cuts
    counts = [s.source.partition_count() for s in plan.sources()]
    wanted = config.partitions or max([*counts, config.workers])
    return shuffle.ensure_topics(topics, wanted)


@dataclass
class CutWriter:
    """The writer of one cut and the tracker of its event-time progress (every partition
    upstream of the cut)."""

    cut: Cut
    sink: ShuffleWriter
    tracker: WatermarkTracker
    sent_ms: float = 0.0


def split_plan(
    plan: Plan,
    config: WorkerConfig,
    clock: Clock,
    shuffle: Shuffle | None = None,
    *,
    transaction: TransactionScope | None = None,
) -> tuple[Plan, list[CutWriter]]:
    """Worker ``config.index``'s plan: sources shared, every keyed input through ``shuffle``
    (default: :func:`default_shuffle`), its writers in ``transaction`` if given
    (exactly-once checkpoints)."""
    splitter = _Splitter(plan, config, clock, shuffle or default_shuffle(plan, config))
    splitter.transaction = transaction
    return splitter.run()


class _Splitter:
    def __init__(
        self, plan: Plan, config: WorkerConfig, clock: Clock, shuffle: Shuffle | None
    ) -> None:
        self.plan = plan
        self.config = config
        self.shuffle = shuffle
        self.progress = ProgressFeed(clock)
        self.clock = clock
        self.cuts = {(id(c.upstream), c.keys): c for c in find_cuts(plan)}
        self.memo: dict[int, PlanNode] = {}
        self.sources: dict[int, SourceNode] = {}  # cut number -> its reading node
        self.pending: list[tuple[Cut, ShuffleWriter]] = []
        self.extra_sinks: list[SinkNode] = []
        self.transaction: TransactionScope | None = None
        self.partitions = create_repartition_topics(plan, config, shuffle) if shuffle else 0

    def run(self) -> tuple[Plan, list[CutWriter]]:
        for node in self.plan.nodes():
            self.rewrite(node)
        sinks = [self.memo[id(s)] for s in self.plan.sinks]
        new_plan = validate(
            tuple(s for s in (*sinks, *self.extra_sinks) if isinstance(s, SinkNode))
        )
        offsets: dict[str, int] = {}
        total = 0
        for source in new_plan.sources():  # the executor's numbering, for readable metrics
            offsets[source.name] = total
            total += source.source.partition_count()
        return new_plan, [self._writer(cut, sink, offsets) for cut, sink in self.pending]

    def _writer(self, cut: Cut, sink: ShuffleWriter, offsets: dict[str, int]) -> CutWriter:
        """The writer of ``cut``, its tracker over every partition upstream of the cut."""
        upstream = self.memo[id(cut.upstream)]
        partitions: dict[int, tuple[int, int | None]] = {}
        nodes = [n for n in walk(upstream) if isinstance(n, SourceNode)]
        for node in nodes:
            for p in range(node.source.partition_count()):
                partitions[offsets[node.name] + p] = (
                    node.max_out_of_orderness_ms,
                    node.idle_timeout_ms,
                )
        tracker = WatermarkTracker(partitions, self.clock())
        for node in nodes:
            self.progress.subscribe(node.name, tracker, offsets[node.name])
        sink.tracker = tracker  # its state: checkpoints keep it with the writer's
        return CutWriter(cut, sink, tracker)

    def rewrite(self, node: PlanNode) -> PlanNode:
        done = self.memo.get(id(node))
        if done is not None:
            return done
        if isinstance(node, SourceNode):
            mine = owned(node.source.partition_count(), self.config.index, self.config.workers)
            shared = SharedSource(
                node.source, mine, node.timestamp, self.progress.observer(node.name)
            )
            new: PlanNode = dataclasses.replace(node, source=shared)
        else:
            cut_inputs = {id(n): keys for n, keys in _keyed_inputs(node)}
            changes: dict[str, Any] = {}  # replace() of a union takes no common field types
            for f in dataclasses.fields(node):
                value = getattr(node, f.name)
                if isinstance(value, PlanNode):
                    changes[f.name] = self._input(value, cut_inputs)
                elif isinstance(value, tuple) and value and isinstance(value[0], PlanNode):
                    changes[f.name] = tuple(self._input(v, cut_inputs) for v in value)
            new = dataclasses.replace(node, **changes)
        self.memo[id(node)] = new
        return new

    def _input(self, value: PlanNode, cut_inputs: dict[int, tuple[str, ...]]) -> PlanNode:
        base = value.input if isinstance(value, KeyByNode) else value
        keys = cut_inputs.get(id(base))
        if keys is None:
            return self.rewrite(value)
        reading = self._cut(self.cuts[(id(base), keys)])
        return KeyByNode(reading, value.keys) if isinstance(value, KeyByNode) else reading

    def _cut(self, cut: Cut) -> SourceNode:
        existing = self.sources.get(cut.number)
        if existing is not None:
            return existing
        config, shuffle = self.config, self.shuffle
        assert shuffle is not None  # the plan has cuts
        upstream = self.rewrite(cut.upstream)
        topic = cut.topic(config.app_id)
        sink = shuffle.writer(
            topic,
            cut.keys,
            self.partitions,
            writer=config.index,
            run_id=config.run_id,
            transaction=self.transaction,
        )
        self.extra_sinks.append(SinkNode(upstream, sink))
        self.pending.append((cut, sink))
        name = f"repartition-{cut.number}"
        source = shuffle.reader(
            topic,
            owned(self.partitions, config.index, config.workers),
            writers=config.workers,
            run_id=config.run_id,
            schema=self.plan.schemas.get(cut.upstream),
            group_id=config.app_id,
            observer=self.progress.observer(name),
        )
        node = SourceNode(source, self.plan.timestamps.get(cut.upstream), 0, None, name)
        self.sources[cut.number] = node
        return node
