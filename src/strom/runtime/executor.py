"""The streaming executor: runs a plan incrementally over partitioned sources.

Scheduling is deterministic: each round polls every unfinished source partition once, in global
partition order (sources in plan order, then partition index). After each poll the batch (if any)
flows to the sinks, then a progress message carries the batch's largest event time, so rows of a
batch are judged late against the watermark from *before* that batch. When every partition of a
bounded source has ended, the watermark reaches its maximum and every window fires.

Polls never wait. A round that found nothing ends in one wait on the sources that can be idle
(:class:`~strom.pipeline.io.WaitingSource`), which returns as soon as records arrive for any of
their partitions: a record is not held up by its source's idle partitions, and an idle pipeline
sleeps instead of polling.

A partition reader may define ``watermark() -> int | None``: its event-time progress, used instead
of the batch's largest event time (a repartition topic's rows interleave several writers, whose
progress records say how far each has got; see :mod:`strom.runtime.repartition`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import polars as pl

from strom.pipeline.io import END_OF_PARTITION, SourcePartition, WaitingSource
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
from strom.pipeline.stream import Pipeline
from strom.pipeline.windows import Session, event_time_ms
from strom.runtime.interval_join import IntervalJoinOperator
from strom.runtime.lookup import LookupJoinOperator
from strom.runtime.operators import (
    Operator,
    OperatorMetrics,
    SinkOperator,
    TransformOperator,
)
from strom.runtime.process_operator import ProcessOperator
from strom.runtime.sessions import SessionOperator
from strom.runtime.time_windows import TimeWindowOperator
from strom.runtime.watermarks import WatermarkTracker
from strom.runtime.window_base import WindowOperatorBase

Clock = Callable[[], float]

#: The longest an idle round waits for input: what bounds how late clock-driven work (idle
#: timeouts, a stop request seen by the caller) can be while no data arrives.
IDLE_WAIT_S = 0.1
#: Several sources that can be idle are waited on in turn, this long each.
SHARED_WAIT_SLICE_S = 0.002


def _monotonic_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass
class _Reader:
    partition: int
    node: SourceNode
    reader: SourcePartition
    operator: Operator
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
            op = self._make(node, name)
            self._operators[node] = op
            for port, upstream in enumerate(node.inputs):
                up = self._operators[upstream]
                if isinstance(node, LateNode):
                    assert isinstance(up, WindowOperatorBase)
                    up.late_outputs.append(op)
                elif isinstance(node, IntervalJoinLateNode):
                    assert isinstance(up, IntervalJoinOperator)
                    up.late_outputs[node.side].append(op)
                elif isinstance(op, IntervalJoinOperator):
                    up.outputs.append(op.ports[port])
                else:
                    up.outputs.append(op)

    def _make(self, node: Node, name: str) -> Operator:
        if isinstance(node, FilterNode | WithColumnsNode | SelectNode | MapBatchesNode | MapNode):
            return TransformOperator(name, node)
        if isinstance(node, ProcessNode):
            ts = self.plan.timestamps.get(node.input)
            return ProcessOperator(name, node, ts, self._tracker(node))
        if isinstance(node, LookupJoinNode):
            return LookupJoinOperator(name, node, self.clock)
        if isinstance(node, IntervalJoinNode):
            left_ts, right_ts = self.plan.timestamps[node.left], self.plan.timestamps[node.right]
            assert left_ts is not None and right_ts is not None  # validated
            return IntervalJoinOperator(name, node, (left_ts, right_ts), self._tracker(node))
        if isinstance(node, SinkNode):
            return SinkOperator(name, node.sink)
        if isinstance(node, WindowAggNode):
            return self._make_window(node, name)
        if isinstance(node, SourceNode | KeyByNode | UnionNode | LateNode | IntervalJoinLateNode):
            return Operator(name)
        raise TypeError(f"the streaming runtime cannot run {node.label} nodes yet")

    def _tracker(self, node: Node) -> WatermarkTracker:
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
        for source, partitions in self._partitions.items():
            for local, global_index in enumerate(partitions):
                reader = source.source.open_partition(local)
                self._readers.append(_Reader(global_index, source, reader, self._operators[source]))

    def step(self) -> bool:
        """Poll every unfinished partition once; False once all have ended (then closed).

        A round that found nothing (no rows, no partition ended) ends with one wait on the
        sources that can be idle (:class:`~strom.pipeline.io.WaitingSource`), at most
        :data:`IDLE_WAIT_S`: it returns as soon as any of their partitions has records, so a
        record waits for no other partition, and an idle pipeline sleeps instead of spinning.
        """
        self.open()
        idle = True
        for r in self._readers:
            if r.finished:
                continue
            item = r.reader.poll()
            now = self.clock()
            if item is END_OF_PARTITION:
                r.finished = True
                idle = False
                r.operator.on_progress(r.partition, None, now, True)
                continue
            max_ts = None
            if item is not None and item.height:
                idle = False
                r.operator.metrics.records_in += item.height
                r.operator.emit(r.partition, item)
                max_ts = _max_event_time(item, r.node.timestamp)
            reported = getattr(r.reader, "watermark", None)
            if callable(reported):  # the partition knows its progress better than its rows do
                max_ts = reported()
            r.operator.on_progress(r.partition, max_ts, now, False)
        if all(r.finished for r in self._readers):
            self.close()
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
        """Step until every source partition has ended (or ``max_rounds`` rounds)."""
        rounds = 0
        while self.step():
            rounds += 1
            if max_rounds is not None and rounds >= max_rounds:
                return
            if idle_sleep_s:
                time.sleep(idle_sleep_s)

    def close(self) -> None:
        """Close every sink (they flush), then every source that has a ``close`` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for op in self._operators.values():
                op.close()
        finally:
            for node in self.plan.sources():
                close = getattr(node.source, "close", None)
                if callable(close):
                    close()

    def metrics(self) -> dict[str, OperatorMetrics]:
        """A copy of every operator's counters, by operator name (in plan order)."""
        out: dict[str, OperatorMetrics] = {}
        for op in self._operators.values():
            if isinstance(
                op,
                WindowOperatorBase | ProcessOperator | LookupJoinOperator | IntervalJoinOperator,
            ):
                op.metrics.state_size = op.state_size()
            out[op.name] = replace(op.metrics)
        return out

    def window_operators(self) -> list[WindowOperatorBase]:
        """The window operators (whose ``snapshot()``/``restore()`` hold their state)."""
        return [op for op in self._operators.values() if isinstance(op, WindowOperatorBase)]

    def lookup_operators(self) -> list[LookupJoinOperator]:
        """The lookup-join operators (whose counters show queries and cache hits)."""
        return [op for op in self._operators.values() if isinstance(op, LookupJoinOperator)]

    def interval_join_operators(self) -> list[IntervalJoinOperator]:
        """The interval-join operators (whose ``snapshot()``/``restore()`` hold their state)."""
        return [op for op in self._operators.values() if isinstance(op, IntervalJoinOperator)]

    def process_operators(self) -> list[ProcessOperator]:
        """The keyed process operators (whose ``snapshot()``/``restore()`` hold their state)."""
        return [op for op in self._operators.values() if isinstance(op, ProcessOperator)]


def _max_event_time(batch: pl.DataFrame, column: str | None) -> int | None:
    if column is None:
        return None
    value = batch.select(event_time_ms(column, batch.schema[column]).max()).item()
    return None if value is None else int(value)


def run_streaming(pipeline: Pipeline | Plan, *, clock: Clock | None = None) -> StreamingExecutor:
    """Run a pipeline over bounded sources to the end, incrementally; returns the executor."""
    executor = StreamingExecutor(pipeline, clock=clock)
    executor.run()
    return executor
