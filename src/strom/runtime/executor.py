"""The streaming executor: runs a plan incrementally over partitioned sources.

Scheduling is deterministic: each round polls every unfinished source partition once, in global
partition order (sources in plan order, then partition index), then, in the same order, each
partition's batch (if any) flows to the sinks, followed by a progress message carrying the
batch's largest event time, so rows of a batch are judged late against the watermark from
*before* that batch. When every partition of a
bounded source has ended, the watermark reaches its maximum and every window fires.

:meth:`StreamingExecutor.snapshot` takes every source partition's position and every stateful
operator's state between steps; :meth:`StreamingExecutor.restore` starts another executor of the
same pipeline from it (see :mod:`strom.runtime.snapshots`). Sinks take part in checkpoints
through :meth:`~StreamingExecutor.pre_commit` and :meth:`~StreamingExecutor.commit`. Persisted
checkpoints and recovery are :mod:`strom.runtime.checkpoints`'s (``run_streaming(...,
checkpoint_dir=...)``): :meth:`~StreamingExecutor.step` returns False at the end of the input
without closing anything, so a final checkpoint commits the last outputs before ``close()``.

Polls never wait. A round that found nothing ends in one wait on the sources that can be idle
(:class:`~strom.engine.contracts.WaitingSource`), which returns as soon as records arrive for any of
their partitions: a record is not held up by its source's idle partitions, and an idle pipeline
sleeps instead of polling.

A source whose every downstream operator is stateless (transforms and sinks, which ignore both
the partition a batch came from and progress) gets its partitions' batches of a round as one
concatenated batch after the round's polls: a trickle arrives a few records per partition per
round, and each batch costs every operator a fixed price (a Polars query, a sink write), so one
batch a round instead of one per partition divides that price by the partition count. A source
whose stateful operators downstream are all windows gets them as one batch too, with the rows'
partitions (:meth:`~strom.runtime.operators.Operator.on_segments`), before the round's progress
messages: a window takes each partition's rows just before that partition's progress message,
where a batch of its own would have come, so watermarks and lateness stay exact.

A partition reader may define ``watermark() -> int | None``: its event-time progress, used instead
of the batch's largest event time (a repartition topic's rows interleave several writers, whose
progress records say how far each has got; see :mod:`strom.runtime.distributed.repartition`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, assert_never

import polars as pl

from strom.engine.contracts import (
    END_OF_PARTITION,
    Guarantee,
    Metrics,
    MetricsProvider,
    Position,
    ProjectingSource,
    SideOutputs,
    Sink,
    SourcePartition,
    StateError,
    StatefulOperator,
    StatefulSink,
    WaitingSource,
)
from strom.engine.projection import read_columns
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
    Node,
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
from strom.pipeline.stream import Pipeline
from strom.pipeline.validate import PlanError
from strom.pipeline.windows import Duration, Session, event_time_ms, to_ms
from strom.runtime.asof_join import AsofJoinOperator
from strom.runtime.checkpoints import CheckpointedRun, CheckpointStore
from strom.runtime.interval_join import IntervalJoinOperator
from strom.runtime.keyed_agg import KeyedAggOperator
from strom.runtime.lookup import LookupJoinOperator
from strom.runtime.operators import (
    Operator,
    SinkOperator,
    StatefulSinkOperator,
    TransformOperator,
)
from strom.runtime.predict import PredictOperator
from strom.runtime.process_operator import ProcessOperator
from strom.runtime.snapshots import ExecutorSnapshot
from strom.runtime.ttl_join import TTLJoinOperator
from strom.runtime.watermarks import WatermarkTracker
from strom.runtime.windows.base import WindowOperatorBase
from strom.runtime.windows.sessions import SessionOperator
from strom.runtime.windows.time_windows import TimeWindowOperator

Clock = Callable[[], float]

#: The longest an idle round waits for input: what bounds how late clock-driven work (idle
#: timeouts, a stop request seen by the caller) can be while no data arrives.
IDLE_WAIT_S = 0.1
#: Several sources that can be idle are waited on in turn, this long each.
SHARED_WAIT_SLICE_S = 0.002


def _monotonic_ms() -> float:
    return time.monotonic() * 1000.0


#: How a source's batches of a round go out: one by one, each followed by its partition's
#: progress; merged into one batch (nothing downstream reads partitions or progress); merged
#: with their partitions (:meth:`Operator.on_segments`: windows downstream).
Merging = Literal["none", "stateless", "segments"]


@dataclass
class _Reader:
    partition: int  # the global index
    local: int  # the index within its source
    node: SourceNode
    reader: SourcePartition
    operator: Operator
    merging: Merging = "none"
    finished: bool = False


class StreamingExecutor:
    """Runs ``pipeline`` (or a validated :class:`Plan`) incrementally.

    ``clock`` returns processing time in milliseconds (inject one in tests to drive idleness).
    Use :meth:`run` for bounded sources, or :meth:`step` to interleave with other work.
    """

    def __init__(self, pipeline: Pipeline | Plan, *, clock: Clock | None = None) -> None:
        self.plan = pipeline.plan() if isinstance(pipeline, Pipeline) else pipeline
        self.clock = clock or _monotonic_ms
        self._operators: dict[Node, Operator] = {}
        self._readers: list[_Reader] = []
        self._partitions: dict[SourceNode, list[int]] = {}
        self._opened = False
        self._stepped = False
        self._closed = False
        self._build()

    def _build(self) -> None:
        next_partition = 0
        for source in self.plan.sources():
            count = source.source.partition_count()
            self._partitions[source] = list(range(next_partition, next_partition + count))
            next_partition += count
        for index, node in enumerate(self.plan.nodes()):
            name = f"{index}:{node.label}" if not isinstance(node, SourceNode) else node.name
            self._operators[node] = self._make(node, name)

    def _make(self, node: PlanNode, name: str) -> Operator:
        """The operator of ``node``, subscribed to its inputs' operators (built before it):
        to their outputs, or (the cases that return early) to a join's side port or to a
        window's or join's late output."""
        op: Operator
        match node:
            case SourceNode():
                return Operator(name)
            case FilterNode() | WithColumnsNode() | SelectNode() | MapBatchesNode() | MapNode():
                op = TransformOperator(name, node)
            case ProcessNode():
                ts = self.plan.timestamps.get(node.input)
                op = ProcessOperator(name, node, ts, self._tracker(node))
            case LookupJoinNode():
                op = LookupJoinOperator(name, node, self.clock)
            case WindowAggNode():
                op = self._make_window(node, name)
            case KeyedAggNode():
                op = KeyedAggOperator(name, node, self.plan.timestamps.get(node.input))
            case JoinNode():
                if node.ttl_ms is None:
                    raise PlanError(
                        f"{name}: a streaming join() needs ttl_ms= (how long each row is held; "
                        "without it the state would grow without bound), or use interval_join() "
                        "(matches within an event-time interval, state purged by the "
                        "watermark) or lookup_join() (enrich from a SQLite/PostgreSQL table)"
                    )
                schemas = (self.plan.schemas.get(node.left), self.plan.schemas.get(node.right))
                ttl_join = TTLJoinOperator(name, node, self.clock, self._tracker(node), schemas)
                self._operators[node.left].outputs.append(ttl_join.ports[0])
                self._operators[node.right].outputs.append(ttl_join.ports[1])
                return ttl_join
            case SortNode() | DistinctNode():
                what = "sort() and top_k()" if isinstance(node, SortNode) else "distinct()"
                raise PlanError(
                    f"{name}: {what} run in bounded runs only (a stream never ends, so it has "
                    "no last row to order or deduplicate by); run the pipeline with run_bounded"
                )
            case KeyByNode() | UnionNode():
                op = Operator(name)
            case PredictNode():
                op = PredictOperator(name, node, self.plan.timestamps.get(node.input))
            case SinkNode():
                if isinstance(node.sink, StatefulSink):
                    op = StatefulSinkOperator(name, node.sink)
                else:
                    op = SinkOperator(name, node.sink)
            case IntervalJoinNode():
                left_ts, right_ts = (
                    self.plan.timestamps[node.left],
                    self.plan.timestamps[node.right],
                )
                assert left_ts is not None and right_ts is not None  # validated
                join = IntervalJoinOperator(name, node, (left_ts, right_ts), self._tracker(node))
                self._operators[node.left].outputs.append(join.ports[0])
                self._operators[node.right].outputs.append(join.ports[1])
                return join
            case AsofJoinNode():
                events_ts = self.plan.timestamps[node.left]
                features_ts = self.plan.timestamps[node.right]
                assert events_ts is not None and features_ts is not None  # validated
                trackers = (self._tracker(node.left), self._tracker(node.right))
                schema = self.plan.schemas.get(node.right)
                asof = AsofJoinOperator(name, node, (events_ts, features_ts), trackers, schema)
                self._operators[node.left].outputs.append(asof.ports[0])
                self._operators[node.right].outputs.append(asof.ports[1])
                return asof
            case LateNode():
                window = self._operators[node.input]
                assert isinstance(window, WindowOperatorBase)
                window.late_outputs.append(op := Operator(name))
                return op
            case IntervalJoinLateNode():
                join_op = self._operators[node.input]
                assert isinstance(join_op, IntervalJoinOperator | AsofJoinOperator)
                join_op.late_outputs[node.side].append(op := Operator(name))
                return op
            case _:
                assert_never(node)
        for upstream in node.inputs:
            self._operators[upstream].outputs.append(op)
        return op

    def _tracker(self, node: PlanNode) -> WatermarkTracker:
        """A watermark tracker over every source partition upstream of ``node``."""
        partitions: dict[int, tuple[int, int | None]] = {}
        for upstream in walk(node):
            if isinstance(upstream, SourceNode):
                for p in self._partitions[upstream]:
                    partitions[p] = (upstream.max_out_of_orderness_ms, upstream.idle_timeout_ms)
        return WatermarkTracker(partitions, self.clock())

    def _make_window(self, node: WindowAggNode, name: str) -> WindowOperatorBase:
        ts_column = self.plan.timestamps.get(node.input)
        assert ts_column is not None  # validated
        tracker = self._tracker(node)
        if isinstance(node.window, Session):
            return SessionOperator(name, node, ts_column, tracker)
        return TimeWindowOperator(name, node, ts_column, tracker)

    def open(self) -> None:
        """Open sinks and source partitions (done by the first :meth:`step` if not called)."""
        if self._opened:
            return
        self._opened = True
        for op in self._operators.values():
            op.open()
        projection = read_columns(self.plan)
        for source, partitions in self._partitions.items():
            if isinstance(source.source, ProjectingSource):
                source.source.project(projection[source])
            operator = self._operators[source]
            merging: Merging = "none"
            if _stateless_downstream(operator):
                merging = "stateless"
            elif _segment_downstream(operator):
                merging = "segments"
            for local, global_index in enumerate(partitions):
                reader = source.source.open_partition(local)
                self._readers.append(
                    _Reader(global_index, local, source, reader, operator, merging)
                )

    @property
    def finished(self) -> bool:
        """Every source partition has ended (and every window fired): nothing more will come.
        The run is not closed by it: a caller commits the last outputs first (a final
        checkpoint), then :meth:`close`."""
        return self._opened and all(r.finished for r in self._readers)

    def step(self) -> bool:
        """Poll every unfinished partition once; False once all have ended (see
        :attr:`finished`; sinks stay open until :meth:`close`).

        A round that found nothing (no rows, no partition ended) ends with one wait on the
        sources that can be idle (:class:`~strom.engine.contracts.WaitingSource`), at most
        :data:`IDLE_WAIT_S`: it returns as soon as any of their partitions has records, so a
        record waits for no other partition, and an idle pipeline sleeps instead of spinning.
        """
        self.open()
        self._stepped = True
        idle = True
        polled = []
        for r in self._readers:
            if not r.finished:
                polled.append((r, r.reader.poll(), self.clock()))
        merged: dict[Operator, list[tuple[int, pl.DataFrame]]] = {}
        segments: set[Operator] = set()
        for r, item, _ in polled:
            if r.merging != "none" and isinstance(item, pl.DataFrame) and item.height:
                merged.setdefault(r.operator, []).append((r.partition, item))
                if r.merging == "segments":
                    segments.add(r.operator)
        for operator, batches in merged.items():  # before any progress of the round
            _emit_merged(operator, batches, operator in segments)
        for r, item, now in polled:
            if item is END_OF_PARTITION:
                r.finished = True
                idle = False
                r.operator.on_progress(r.partition, None, now, True)
                continue
            max_ts = None
            if item is not None and item.height:
                idle = False
                r.operator.counters.rows_in += item.height
                if r.merging == "none":
                    r.operator.emit(r.partition, item)
                if r.merging != "stateless":  # nothing downstream reads progress otherwise
                    max_ts = _max_event_time(item, r.node.timestamp)
            reported = getattr(r.reader, "watermark", None)
            if callable(reported):  # the partition knows its progress better than its rows do
                max_ts = reported()
            r.operator.on_progress(r.partition, max_ts, now, False)
        if self.finished:
            return False
        if idle:
            self._wait_for_input()
        return True

    def _wait_for_input(self) -> None:
        """One wait on the unfinished sources that can be idle. A single one (the usual case)
        gets the whole :data:`IDLE_WAIT_S`; several share it in slices of
        :data:`SHARED_WAIT_SLICE_S` in turn, until one has something."""
        unfinished = {r.node for r in self._readers if not r.finished}
        waiting = [n.source for n in unfinished if isinstance(n.source, WaitingSource)]
        if len(waiting) == 1:
            waiting[0].wait(IDLE_WAIT_S)
            return
        deadline = time.monotonic() + IDLE_WAIT_S
        while waiting and time.monotonic() < deadline:
            for source in waiting:
                if source.wait(SHARED_WAIT_SLICE_S):
                    return

    def run(self, *, max_rounds: int | None = None, idle_sleep_s: float = 0.0) -> None:
        """Step until every source partition has ended, then close (or return, open, after
        ``max_rounds`` rounds)."""
        rounds = 0
        while self.step():
            rounds += 1
            if max_rounds is not None and rounds >= max_rounds:
                return
            if idle_sleep_s:
                time.sleep(idle_sleep_s)
        self.close()

    def close(self) -> None:
        """Close every sink (they flush), then every source (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for op in self._operators.values():
                op.close()
        finally:
            for node in self.plan.sources():
                node.source.close()

    # -- snapshots and the sinks' two phases ---------------------------------------------------

    def operator_ids(self) -> list[str]:
        """Every operator's id (``"3:WindowAgg"``; a source's name), in plan order."""
        return [op.name for op in self._operators.values()]

    def source_partitions(self) -> dict[str, int]:
        """Each source's partition count, by source name, in plan order."""
        return {node.name: len(parts) for node, parts in self._partitions.items()}

    def stateful_operators(self) -> dict[str, StatefulOperator]:
        """The operators holding state (windows, process functions, joins), by operator id."""
        return {op.name: op for op in self._operators.values() if isinstance(op, StatefulOperator)}

    def snapshot(self) -> ExecutorSnapshot:
        """Every source partition's position and every stateful operator's state, now (between
        two steps; opens the run if no step has yet). A copy: running on changes nothing in it.

        Restoring it into an executor of the same pipeline definition (:meth:`restore`) and
        running that to the end emits what this executor would emit from here on."""
        self.open()
        positions: dict[str, list[Position]] = {}
        for r in self._readers:
            position = getattr(r.reader, "position", None)
            if not callable(position):
                raise TypeError(
                    f"source {r.node.name!r}: its partition reader "
                    f"{type(r.reader).__name__} has no position(), so it cannot be "
                    "snapshotted (see strom.engine.contracts.SourcePartition)"
                )
            positions.setdefault(r.node.name, []).append(position())
        states = {name: op.snapshot() for name, op in self.stateful_operators().items()}
        return ExecutorSnapshot(positions, states, self.clock())

    def restore(self, snapshot: ExecutorSnapshot, *, elapsed_ms: float = 0.0) -> None:
        """Start from ``snapshot`` instead of the sources' beginnings: every source partition
        seeks to its position and every stateful operator restores its state. Call it before
        the first :meth:`step`. Raises :class:`StateError` for a snapshot of another pipeline
        (other operators or partitions), :class:`PositionError` for a position a source
        cannot seek to.

        Processing-time values in the states (a partition's last data, for idleness;
        processing-time timers) are rebased from the snapshot's clock onto this executor's:
        ages and timers' remaining times are kept as they were at the snapshot, less
        ``elapsed_ms`` (the processing time that passed in between: a recovery passes the
        wall time since its checkpoint, so a timer due during the outage fires at once)."""
        if self._stepped or self._closed:
            raise RuntimeError("restore() must come before the first step()")
        stateful = self.stateful_operators()
        _same_names("stateful operators", set(stateful), set(snapshot.states))
        counts = {node.name: len(parts) for node, parts in self._partitions.items()}
        _same_names("sources", set(counts), set(snapshot.positions))
        for name, count in counts.items():
            if len(snapshot.positions[name]) != count:
                raise StateError(
                    f"the snapshot has {len(snapshot.positions[name])} position(s) of source "
                    f"{name!r}, which has {count} partition(s)"
                )
        self.open()
        for r in self._readers:
            r.reader.seek(snapshot.positions[r.node.name][r.local])
        shift = self.clock() - snapshot.clock_ms - max(elapsed_ms, 0.0)
        for name, op in stateful.items():
            op.restore(snapshot.states[name])
        for operator in self._operators.values():
            operator.rebase_clock(shift)

    def sinks(self) -> list[Sink]:
        """Every sink of the run: the plan's, the operators' and the sources' own (dead-letter
        outputs)."""
        out = [op.sink for op in self._operators.values() if isinstance(op, SinkOperator)]
        for op in self._operators.values():
            if isinstance(op, SideOutputs):  # an operator's dead letters (predict)
                out.extend(op.side_sinks())
        for node in self.plan.sources():
            if isinstance(node.source, SideOutputs):
                out.extend(node.source.side_sinks())
        return out

    def pre_commit(self, checkpoint_id: int) -> None:
        """The first phase of checkpoint ``checkpoint_id`` at every sink (see :class:`Sink`)."""
        for sink in self.sinks():
            sink.pre_commit(checkpoint_id)

    def commit(self, checkpoint_id: int) -> None:
        """The second phase of checkpoint ``checkpoint_id`` at every sink."""
        for sink in self.sinks():
            sink.commit(checkpoint_id)

    def abort(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` failed: every sink discards what it can."""
        for sink in self.sinks():
            sink.abort(checkpoint_id)

    def metrics(self) -> dict[str, Metrics]:
        """Every component's metrics by operator name, in plan order. A source or sink that
        reports metrics (:class:`MetricsProvider`) speaks for itself; otherwise its operator's
        counts (rows delivered, rows written) stand."""
        out: dict[str, Metrics] = {}
        for node, op in self._operators.items():
            source = node.source if isinstance(node, SourceNode) else None
            out[op.name] = source.metrics() if isinstance(source, MetricsProvider) else op.metrics()
        return out


def _same_names(what: str, here: set[str], there: set[str]) -> None:
    if here != there:
        raise StateError(
            f"the snapshot is of another pipeline: its {what} are {sorted(there)}, this "
            f"executor's are {sorted(here)}"
        )


def _stateless_downstream(operator: Operator) -> bool:
    """Whether every operator fed by ``operator`` (transitively) is a stateless transform, a
    pass-through (key_by, union), a scoring step or a sink: none of them reads a batch's
    partition or progress, so batches of several partitions may be merged."""
    pending = list(operator.outputs)
    while pending:
        op = pending.pop()
        if type(op) not in (Operator, TransformOperator, PredictOperator, SinkOperator):
            return False
        pending.extend(op.outputs)
    return True


def _segment_downstream(operator: Operator) -> bool:
    """Whether batches of several partitions may be merged for ``operator``'s downstream with
    their partitions kept (:meth:`Operator.on_segments`): every path leads through
    pass-throughs and transforms to windows (which take each partition's rows at its progress)
    or to operators that ignore partitions and progress with no window after them."""
    pending = list(operator.outputs)
    while pending:
        op = pending.pop()
        if isinstance(op, WindowOperatorBase):
            continue  # its results are batches of its own
        if type(op) in (Operator, TransformOperator):
            pending.extend(op.outputs)
        elif type(op) not in (PredictOperator, SinkOperator) or not _stateless_downstream(op):
            return False
    return True


def _emit_merged(
    operator: Operator, batches: list[tuple[int, pl.DataFrame]], segments: bool
) -> None:
    """Emit a round's ``(partition, batch)`` pairs of one source as one batch, in partition
    order (``segments``: with their partitions, see :meth:`Operator.on_segments`); one by one
    if they do not stack (a source breaking the one-schema contract keeps the behaviour it
    had: each batch passed on as it is)."""
    if len(batches) > 1:
        merged = batches[0][1]
        try:
            for _, batch in batches[1:]:  # vstack: a tenth of pl.concat's fixed cost
                merged = merged.vstack(batch)
        except (pl.exceptions.SchemaError, pl.exceptions.ShapeError):
            pass
        else:
            if segments:
                operator.emit_segments(merged, [(p, b.height) for p, b in batches])
            else:
                operator.emit(batches[0][0], merged)
            return
    for partition, batch in batches:
        if segments:
            operator.emit_segments(batch, [(partition, batch.height)])
        else:
            operator.emit(partition, batch)


def _max_event_time(batch: pl.DataFrame, column: str | None) -> int | None:
    if column is None:
        return None
    series = batch.get_column(column)
    if series.dtype.is_integer():  # event time is the value: no query needed
        top = series.max()
        return None if top is None else int(top)  # type: ignore[arg-type]
    value = batch.select(event_time_ms(column, series.dtype).max()).item()
    return None if value is None else int(value)


def run_streaming(
    pipeline: Pipeline | Plan,
    *,
    clock: Clock | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_interval: Duration = 1_000,
    guarantee: Guarantee = "exactly-once",
    keep_checkpoints: int = 3,
) -> StreamingExecutor:
    """Run a pipeline over bounded sources to the end, incrementally; returns the executor.

    With ``checkpoint_dir``, the run takes a checkpoint every ``checkpoint_interval`` (ms or
    a ``timedelta``; 0: every round) and a final one at the end, keeping the newest
    ``keep_checkpoints``; a run that finds a completed checkpoint there resumes from it (see
    :mod:`strom.runtime.checkpoints`). ``guarantee="exactly-once"`` (the default) refuses,
    before anything runs, sinks that are only at-least-once (a
    :class:`~strom.runtime.checkpoints.CheckpointError` naming them); ``"at-least-once"``
    takes the same checkpoints and accepts every sink.
    """
    executor = StreamingExecutor(pipeline, clock=clock)
    if checkpoint_dir is None:
        executor.run()
        return executor
    run = CheckpointedRun(
        executor,
        CheckpointStore(checkpoint_dir),
        interval_ms=to_ms(checkpoint_interval, "checkpoint_interval"),
        guarantee=guarantee,
        keep=keep_checkpoints,
    )
    try:
        run.run()
    finally:
        run.close()
    return executor
