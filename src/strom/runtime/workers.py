"""One worker of a pipeline run by several processes (``strom run --workers N``).

**Assignment: static.** Worker ``i`` of ``N`` reads partition ``p`` of every source, and of every
repartition topic, exactly when ``p % N == i`` (:func:`owned`). Every worker computes the same
answer from the same plan, so no coordination is needed and a key's state can never move: the
group protocol's rebalancing would hand a partition (and its keys) to another worker, which is only
correct once keyed state can follow it (changelogs, checkpoints), and strom has neither yet.
The repartition readers' consumer group is the app id (``--app-id``); nothing is committed yet
(there are no checkpoints), so a restarted run starts over, under a new run id.

**Stages.** :func:`split_plan` cuts the plan before every keyed operator (windows, process
functions, interval joins): the rows entering it are written to ``<app>-repartition-<n>`` by key
(:mod:`strom.runtime.repartition`), and the operator reads its worker's partitions of that topic
instead. Two keyed operators re-keying one stream by the same columns share a topic. A
:class:`Worker` cuts for any ``N`` (one worker too), so a run's results never depend on its worker
count (``strom run`` without ``--workers`` runs the plain executor, with no cut). The rewritten
plan is an ordinary plan, run by one :class:`StreamingExecutor` per worker; after every step the
worker tells each repartition topic how far its event time has got (a :class:`WatermarkTracker`
over exactly the partitions upstream of the cut, fed by the readers).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from strom.connectors.kafka import KafkaSource
from strom.connectors.kafka_client import (
    CONNECT_TIMEOUT_S,
    ClientErrors,
    KafkaConnectorError,
    client_config,
)
from strom.pipeline.io import (
    END_OF_PARTITION,
    PollResult,
    Source,
    SourcePartition,
    WaitingSource,
)
from strom.pipeline.plan import (
    FilterNode,
    IntervalJoinLateNode,
    IntervalJoinNode,
    KeyByNode,
    LateNode,
    LookupJoinNode,
    MapBatchesNode,
    MapNode,
    Node,
    Plan,
    ProcessNode,
    SelectNode,
    SinkNode,
    SourceNode,
    UnionNode,
    WindowAggNode,
    WithColumnsNode,
    walk,
)
from strom.pipeline.validate import PlanError, validate
from strom.pipeline.windows import event_time_ms
from strom.runtime.executor import StreamingExecutor
from strom.runtime.operators import OperatorMetrics
from strom.runtime.repartition import Observer, Progress, RepartitionSource, RepartitionWriter
from strom.runtime.watermarks import MAX_WATERMARK, WatermarkTracker

__all__ = ["Worker", "WorkerConfig", "owned", "repartition_topics", "split_plan"]

Clock = Callable[[], float]
#: The least processing time between two progress records of one writer while its watermark
#: moves (ending, and turning idle or active, are sent at once).
PROGRESS_INTERVAL_MS = 20.0
_STATELESS = (
    FilterNode,
    WithColumnsNode,
    SelectNode,
    MapBatchesNode,
    MapNode,
    LookupJoinNode,
    KeyByNode,
    LateNode,
    IntervalJoinLateNode,
    UnionNode,
    SinkNode,
)


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
    upstream: Node
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


def _keyed_inputs(node: Node) -> list[tuple[Node, tuple[str, ...]]]:
    """The (rows to repartition, key columns) edges into a keyed operator; a ``key_by`` step
    before it is skipped (the downstream stage re-applies it)."""

    def base(n: Node) -> Node:
        return n.input if isinstance(n, KeyByNode) else n

    if isinstance(node, WindowAggNode | ProcessNode):
        return [(base(node.input), node.keys)]
    if isinstance(node, IntervalJoinNode):
        return [(base(node.left), node.left_on), (base(node.right), node.right_on)]
    if isinstance(node, (SourceNode, *_STATELESS)):
        return []
    raise PlanError(f"{node.label}: --workers cannot split a plan with {node.label} nodes yet")


def repartition_topics(plan: Plan, app_id: str) -> list[str]:
    return [cut.topic(app_id) for cut in find_cuts(plan)]


def ensure_topics(bootstrap_servers: str, topics: Sequence[str], partitions: int) -> int:
    """Create the missing ``topics`` with ``partitions`` partitions; return the count they have
    (every topic must agree, or workers would route keys differently)."""
    errors = ClientErrors("repartition topics")
    admin = AdminClient(client_config(bootstrap_servers, "strom-workers", errors, {}, None))
    new = [NewTopic(t, partitions, 1) for t in topics]
    for topic, future in admin.create_topics(new, request_timeout=CONNECT_TIMEOUT_S).items():
        try:
            future.result(CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another worker made it
                raise KafkaConnectorError(
                    f"cannot create repartition topic {topic!r} at {bootstrap_servers}: {exc}"
                ) from exc
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:  # a new topic may take a moment to appear in every broker's metadata
        metadata = admin.list_topics(timeout=CONNECT_TIMEOUT_S)
        counts = {t: len(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
        if len(counts) == len(topics) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if len(counts) != len(topics) or len(set(counts.values())) != 1:
        raise KafkaConnectorError(
            f"repartition topics {list(topics)} at {bootstrap_servers}: expected every one with "
            f"one partition count, found {counts}"
        )
    return next(iter(counts.values()))


def create_repartition_topics(plan: Plan, config: WorkerConfig) -> int:
    """Create ``plan``'s repartition topics if missing; their partition count (0: none needed).

    Topics are created with ``config.partitions`` partitions, by default the most partitions of
    any source and at least one per worker; existing topics keep theirs.
    """
    topics = repartition_topics(plan, config.app_id)
    if not topics:
        return 0
    if config.bootstrap_servers is None:
        raise PlanError(
            "the plan re-keys its stream, so its workers need a Kafka cluster for the "
            "repartition topics: pass --bootstrap-server (or read from a KafkaSource)"
        )
    counts = [s.source.partition_count() for s in plan.sources()]
    wanted = config.partitions or max([*counts, config.workers])
    return ensure_topics(config.bootstrap_servers, topics, wanted)


class _Progress:
    """Per worker: feeds each cut's tracker with what the readers upstream of it deliver."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._subscribers: dict[str, list[tuple[WatermarkTracker, int]]] = {}

    def observer(self, source: str) -> Observer:
        subscribers = self._subscribers.setdefault(source, [])

        def observe(partition: int, max_event_time: int | None, finished: bool) -> None:
            now = self.clock()
            for tracker, offset in subscribers:
                tracker.observe(offset + partition, max_event_time, now)
                if finished:
                    tracker.finish(offset + partition)

        return observe

    def subscribe(self, source: str, tracker: WatermarkTracker, offset: int) -> None:
        self._subscribers.setdefault(source, []).append((tracker, offset))


class SharedSource:
    """Worker ``index``'s share of ``source``: its partitions ``p % workers == index`` (one that
    ends at once if it has none, so a plan always has a partition per source)."""

    def __init__(
        self, source: Source, partitions: list[int], timestamp: str | None, observer: Observer
    ) -> None:
        self.source = source
        self.partitions = partitions
        self._timestamp = timestamp
        self._observer = observer

    def schema(self) -> pl.Schema | None:
        return self.source.schema()

    def partition_count(self) -> int:
        return max(1, len(self.partitions))

    def open_partition(self, index: int) -> SourcePartition:
        if not self.partitions:
            return _Ended(index, self._observer)
        inner = self.source.open_partition(self.partitions[index])
        return _Observed(index, inner, self._timestamp, self._observer)

    def wait(self, timeout_s: float) -> bool:
        """The shared source's own wait (``WaitingSource``); False at once if it has none."""
        if isinstance(self.source, WaitingSource):
            return self.source.wait(timeout_s)
        return False

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()


class _Ended:
    def __init__(self, index: int, observer: Observer) -> None:
        self._index = index
        self._observer = observer

    def poll(self) -> PollResult:
        self._observer(self._index, None, True)
        return END_OF_PARTITION


class _Observed:
    def __init__(
        self, index: int, inner: SourcePartition, timestamp: str | None, observer: Observer
    ) -> None:
        self._index = index
        self._inner = inner
        self._timestamp = timestamp
        self._observer = observer

    def poll(self) -> PollResult:
        item = self._inner.poll()
        if item is END_OF_PARTITION:
            self._observer(self._index, None, True)
            return item
        max_ts = None
        if isinstance(item, pl.DataFrame) and item.height and self._timestamp is not None:
            ts = self._timestamp
            value = item.select(event_time_ms(ts, item.schema[ts]).max()).item()
            max_ts = None if value is None else int(value)
        self._observer(self._index, max_ts, False)
        return item


@dataclass
class _Writer:
    cut: Cut
    sink: RepartitionWriter
    tracker: WatermarkTracker
    sent_ms: float = 0.0


def split_plan(plan: Plan, config: WorkerConfig, clock: Clock) -> tuple[Plan, list[_Writer]]:
    """Worker ``config.index``'s plan: sources shared, every keyed input through its topic."""
    return _Splitter(plan, config, clock).run()


class _Splitter:
    def __init__(self, plan: Plan, config: WorkerConfig, clock: Clock) -> None:
        self.plan = plan
        self.config = config
        self.progress = _Progress(clock)
        self.clock = clock
        self.cuts = {(id(c.upstream), c.keys): c for c in find_cuts(plan)}
        self.memo: dict[int, Node] = {}
        self.sources: dict[int, SourceNode] = {}  # cut number -> its reading node
        self.pending: list[tuple[Cut, RepartitionWriter]] = []
        self.extra_sinks: list[SinkNode] = []
        self.partitions = create_repartition_topics(plan, config)

    def run(self) -> tuple[Plan, list[_Writer]]:
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

    def _writer(self, cut: Cut, sink: RepartitionWriter, offsets: dict[str, int]) -> _Writer:
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
        return _Writer(cut, sink, tracker)

    def rewrite(self, node: Node) -> Node:
        done = self.memo.get(id(node))
        if done is not None:
            return done
        if isinstance(node, SourceNode):
            mine = owned(node.source.partition_count(), self.config.index, self.config.workers)
            shared = SharedSource(
                node.source, mine, node.timestamp, self.progress.observer(node.name)
            )
            new: Node = dataclasses.replace(node, source=shared)
        else:
            cut_inputs = {id(n): keys for n, keys in _keyed_inputs(node)}
            changes: dict[str, Node | tuple[Node, ...]] = {}
            for f in dataclasses.fields(node):
                value = getattr(node, f.name)
                if isinstance(value, Node):
                    changes[f.name] = self._input(value, cut_inputs)
                elif isinstance(value, tuple) and value and isinstance(value[0], Node):
                    changes[f.name] = tuple(self._input(v, cut_inputs) for v in value)
            new = dataclasses.replace(node, **changes)
        self.memo[id(node)] = new
        return new

    def _input(self, value: Node, cut_inputs: dict[int, tuple[str, ...]]) -> Node:
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
        config = self.config
        assert config.bootstrap_servers is not None
        upstream = self.rewrite(cut.upstream)
        topic = cut.topic(config.app_id)
        sink = RepartitionWriter(
            config.bootstrap_servers,
            topic,
            cut.keys,
            self.partitions,
            writer=config.index,
            run_id=config.run_id,
        )
        self.extra_sinks.append(SinkNode(upstream, sink))
        self.pending.append((cut, sink))
        name = f"repartition-{cut.number}"
        source = RepartitionSource(
            config.bootstrap_servers,
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


class Worker:
    """Runs worker ``config.index``'s share of ``plan``: :meth:`step` until it returns False.

    Sinks receive only this worker's keys' results (each key lives in one worker); rows that need
    no key go to the sinks of the worker that read them. So every worker's sink writes to the same
    table: a SQLite file is shared safely (WAL journal; SQLite serializes the writers, and a
    writer waits up to Python's 5 s busy timeout for the lock), and upserts never conflict since
    each key's rows come from one worker.
    """

    def __init__(self, plan: Plan, config: WorkerConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or (lambda: time.monotonic() * 1000.0)
        self.plan, self._writers = split_plan(plan, config, self.clock)
        self.executor = StreamingExecutor(self.plan, clock=self.clock)
        for w in self._writers:
            w.sink.latest_progress = functools.partial(self._progress, w)

    @property
    def topics(self) -> list[str]:
        return [w.sink.topic for w in self._writers]

    def step(self) -> bool:
        """One executor step, then each repartition writer's progress if it changed."""
        more = self.executor.step()
        if more:
            self._send_progress()
        return more

    def run(self, *, max_rounds: int | None = None) -> None:
        rounds = 0
        while self.step():
            rounds += 1
            if max_rounds is not None and rounds >= max_rounds:
                return

    def close(self) -> None:
        """Close sinks and sources (sinks flush); an unfinished run sends no end of input."""
        self.executor.close()

    def _send_progress(self) -> None:
        """Send each writer's progress if it changed: at once when it ended or turned idle or
        active, otherwise at most every :data:`PROGRESS_INTERVAL_MS` (each progress record
        also ends a downstream batch, so sending one per step would shred the batches)."""
        now = self.clock()
        for w in self._writers:
            progress = self._progress(w)
            last = w.sink.progress_sent
            if progress == last:
                continue
            urgent = last is None or progress.ended or progress.idle != last.idle
            if urgent or now - w.sent_ms >= PROGRESS_INTERVAL_MS:
                w.sink.progress(progress)
                w.sent_ms = now

    def _progress(self, writer: _Writer) -> Progress:
        now = self.clock()
        watermark = writer.tracker.advance(now)
        ended = watermark == MAX_WATERMARK
        return Progress(watermark, not ended and writer.tracker.idle(now), ended)

    def metrics(self) -> dict[str, OperatorMetrics]:
        return self.executor.metrics()

    def repartition_metrics(self) -> list[tuple[str, int, int]]:
        """Per repartition topic: rows written and records sent by this worker."""
        return [(w.sink.topic, w.sink.rows_written, w.sink.records_sent) for w in self._writers]

    def kafka_sources(self) -> list[tuple[str, KafkaSource]]:
        out = []
        for node in self.plan.sources():
            inner = node.source.source if isinstance(node.source, SharedSource) else None
            if isinstance(inner, KafkaSource):
                out.append((node.name, inner))
        return out
