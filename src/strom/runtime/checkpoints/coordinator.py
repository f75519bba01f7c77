"""Checkpoints of a single-process run, taken between rounds.

A single-process executor is synchronous: between two rounds no message is in flight, so that
boundary is a consistent cut and needs no barriers. Checkpoint ``c``:

1. ``executor.snapshot()``: every source position and every stateful operator's state, copied
   (the *pause*); a deciding sink that commits positions too
   (:class:`~strom.engine.contracts.CommitsPositions`) is handed them;
2. every sink's ``pre_commit(c)`` (durable, or staged for a two-phase sink);
3. checkpoint ``c`` written atomically (:class:`~.store.CheckpointStore`) by a writer thread,
   while the pipeline runs on: steps 1-2 are all it waits for;
4. at the first round boundary after the write: the decision. The written manifest is it,
   unless a sink decides (:class:`~strom.engine.contracts.CommitDecider`): that sink's
   ``commit(c)`` first, then the manifest is marked committed;
5. every other sink's ``commit(c)``; then checkpoints beyond the newest ``keep`` are deleted.

So a sink receives the writes of checkpoint ``c + 1`` between ``pre_commit(c)`` and
``commit(c)``: they are not ``c``'s. One checkpoint is in flight at a time (a due one waits
for the previous one's commit). A failure in 1-3 aborts ``c`` at every sink and fails the run
(its state and the sinks no longer agree; a restart recovers from the last decided
checkpoint). A failure in 4-5 fails the run too; recovery commits the decided checkpoint again
(commits are idempotent).

:class:`CheckpointedRun` drives an executor with it: a checkpoint every ``interval_ms`` (0: every
round), a final one when the input ends or the run is stopped, then the sinks are closed, so
the last outputs are committed exactly once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strom.engine.contracts import (
    CommitsPositions,
    Guarantee,
    Metrics,
    Position,
    Sink,
    Source,
    SourceShare,
)
from strom.runtime.checkpoints.fingerprint import fingerprint
from strom.runtime.checkpoints.recovery import Recovered, check_sinks, recover, sink_id
from strom.runtime.checkpoints.store import CheckpointStore, Manifest, now_ms

if TYPE_CHECKING:
    from strom.runtime.executor import StreamingExecutor
    from strom.runtime.snapshots import ExecutorSnapshot

__all__ = ["CheckpointStats", "CheckpointedRun"]

log = logging.getLogger("strom.checkpoints")


@dataclass
class CheckpointStats:
    """What the checkpoints of a run cost: ``count`` committed, and the last one's ``id``,
    ``duration_us`` (snapshot to commit), ``pause_us`` (the state copy), ``pre_commit_us``
    (the sinks' first phase; with the pause, all the pipeline waits for), ``write_us``
    (serialization and files, in the writer thread) and ``size`` (bytes of state);
    ``restored``: the checkpoint the run started from (0: none). A
    :class:`~strom.engine.contracts.MetricsProvider`."""

    guarantee: Guarantee = "exactly-once"
    count: int = 0
    id: int = 0
    duration_us: int = 0
    pause_us: int = 0
    pre_commit_us: int = 0
    write_us: int = 0
    size: int = 0
    restored: int = 0

    def metrics(self) -> Metrics:
        """The numbers in ``detail`` (times in microseconds, size in bytes), labelled with the
        guarantee."""
        detail = {"count": self.count, "last_id": self.id, "duration_us": self.duration_us,
                  "pause_us": self.pause_us, "pre_commit_us": self.pre_commit_us,
                  "write_us": self.write_us, "size_bytes": self.size,
                  "restored_id": self.restored}  # fmt: skip
        return Metrics(label=self.guarantee, detail=detail)


@dataclass(frozen=True)
class _InFlight:
    """A checkpoint whose files the writer thread is writing."""

    id: int
    started_ns: int
    future: concurrent.futures.Future[tuple[Manifest, int]]


class CheckpointedRun:
    """Runs ``executor`` with checkpoints in ``store`` (see the module docstring).

    :meth:`step` is the executor's step plus a checkpoint when one is due; recovery happens at
    the first step (or :meth:`start`). :meth:`close` takes the final checkpoint (unless a step
    failed: then it only closes) and closes the executor.
    """

    def __init__(
        self,
        executor: StreamingExecutor,
        store: CheckpointStore,
        *,
        interval_ms: int = 1_000,
        guarantee: Guarantee = "exactly-once",
        keep: int = 3,
        run_round: Callable[[], bool] | None = None,
    ) -> None:
        """``run_round`` is one round of the pipeline (default: ``executor.step``; a worker of a
        multi-worker run also sends its event-time progress in it), False once the input
        has ended."""
        if interval_ms < 0:
            raise ValueError(f"the checkpoint interval must be >= 0 ms, not {interval_ms}")
        if keep < 1:
            raise ValueError(f"at least one checkpoint must be kept, not {keep}")
        self.executor = executor
        self._round = run_round or executor.step
        self.store = store
        self.interval_ms = interval_ms
        self.guarantee = guarantee
        self.keep = keep
        self.stats = CheckpointStats(guarantee)
        self.recovered: Recovered | None = None
        self._sinks: list[Sink] = executor.sinks()
        self._decider: Sink | None = check_sinks(self._sinks, guarantee)
        self._fingerprint = fingerprint(executor)
        self._next_id = 1
        self._due_at = 0.0
        self._failed = False
        self._closed = False
        self._pending: _InFlight | None = None
        #: writes checkpoints' files while the pipeline runs on (one checkpoint at a time)
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "strom-checkpoint-writer")

    def start(self) -> Recovered:
        """Lock the directory and recover (once; the first :meth:`step` does it if needed)."""
        if self.recovered is None:
            self.store.lock()
            self.recovered = recover(self.executor, self.store, self.guarantee)
            self._next_id = self.recovered.next_id
            if self.recovered.checkpoint is not None:
                self.stats.restored = self.recovered.checkpoint.id
            self._due_at = time.monotonic() + self.interval_ms / 1000
        return self.recovered

    def step(self) -> bool:
        """One round; then the commit of the checkpoint in flight once its files are written
        (waited for if the next one is due), and a new checkpoint if one is due. False once
        the input has ended (the final checkpoint is then taken and committed, and the run
        closed)."""
        self.start()
        try:
            more = self._round()
            due = more and time.monotonic() >= self._due_at
            if self._pending is not None and (due or self._pending.future.done()):
                self._complete()  # waits only if the next one is due before this one's write
            if due:
                self._begin()
        except BaseException:
            self._failed = True
            raise
        if not more:
            self.close()
        return more

    def run(self) -> None:
        """Step until the input ends (then checkpointed and closed)."""
        while self.step():
            pass

    def checkpoint(self) -> Manifest:
        """Take the next checkpoint now (between rounds) and commit it; its manifest."""
        self.start()
        try:
            if self._pending is not None:
                self._complete()
            self._begin()
            return self._complete()
        except BaseException:
            self._failed = True
            raise

    def _begin(self) -> None:
        """Steps 1-2 (the pipeline waits for them), then step 3 in the writer thread."""
        checkpoint_id = self._next_id
        self._next_id += 1
        started = time.perf_counter_ns()
        self._due_at = time.monotonic() + self.interval_ms / 1000
        wall = now_ms()
        try:
            snapshot = self.executor.snapshot()
            paused = time.perf_counter_ns()
            if isinstance(self._decider, CommitsPositions):
                self._decider.stage_positions(checkpoint_id, self._positions(snapshot.positions))
            for sink in self._sinks:
                sink.pre_commit(checkpoint_id)
        except BaseException as exc:
            self._abort(checkpoint_id, exc)
            raise
        pause_us = (paused - started) // 1000
        self.stats.pre_commit_us = (time.perf_counter_ns() - paused) // 1000
        future = self._writer.submit(
            self._write, checkpoint_id, snapshot, wall_time_ms=wall, pause_us=pause_us
        )
        self._pending = _InFlight(checkpoint_id, started, future)

    def _write(
        self, checkpoint_id: int, snapshot: ExecutorSnapshot, *, wall_time_ms: int, pause_us: int
    ) -> tuple[Manifest, int]:
        """Step 3, in the writer thread (it touches only the store and the snapshot, a copy)."""
        began = time.perf_counter_ns()
        manifest = self.store.write(
            checkpoint_id,
            snapshot,
            fingerprint=self._fingerprint,
            guarantee=self.guarantee,
            decider=self._decider_id(),
            wall_time_ms=wall_time_ms,
            pause_us=pause_us,
        )
        return manifest, (time.perf_counter_ns() - began) // 1000

    def _complete(self) -> Manifest:
        """Wait for the pending checkpoint's files, then steps 4-5 and retention."""
        pending = self._pending
        assert pending is not None
        self._pending = None
        try:
            manifest, write_us = pending.future.result()
        except BaseException as exc:
            self._abort(pending.id, exc)
            raise
        if self._decider is not None:
            self._decider.commit(pending.id)  # the decision
            manifest = self.store.mark_committed(manifest)
        for sink in self._sinks:
            if sink is not self._decider:
                sink.commit(pending.id)
        self.store.retain(self.keep)
        stats = self.stats
        stats.count += 1
        stats.id = pending.id
        stats.duration_us = (time.perf_counter_ns() - pending.started_ns) // 1000
        stats.pause_us = manifest.pause_us
        stats.write_us = write_us
        stats.size = manifest.size
        return manifest

    def close(self) -> None:
        """The final checkpoint (unless a step or checkpoint failed, or the run never
        started), then close the executor (sinks, then sources); idempotent. After a failure
        a write under way is waited for, not committed (recovery decides what it was worth)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.recovered is not None and not self._failed:
                self.checkpoint()
        finally:
            try:
                if self._pending is not None:
                    concurrent.futures.wait([self._pending.future])
                self._writer.shutdown(wait=True)
                self.executor.close()
            finally:
                self.store.unlock()

    def metrics(self) -> dict[str, Metrics]:
        """The executor's metrics, and the checkpoints' (:class:`CheckpointStats`) as a
        ``checkpoints`` row."""
        return {**self.executor.metrics(), "checkpoints": self.stats.metrics()}

    def _positions(
        self, positions: Mapping[str, Sequence[Position]]
    ) -> list[tuple[Source, Mapping[int, Position]]]:
        """A snapshot's positions with each source object, by partition number (for the
        decider); a worker's share of a source gives the shared source's own numbers."""
        out: list[tuple[Source, Mapping[int, Position]]] = []
        for node in self.executor.plan.sources():
            found = positions.get(node.name, [])
            if isinstance(node.source, SourceShare):
                numbers = node.source.partitions
                out.append((node.source.source, dict(zip(numbers, found, strict=False))))
            else:
                out.append((node.source, dict(enumerate(found))))
        return out

    def _decider_id(self) -> str | None:
        for index, sink in enumerate(self._sinks):
            if sink is self._decider:
                return sink_id(index, sink)
        return None

    def _abort(self, checkpoint_id: int, cause: BaseException) -> None:
        log.error("checkpoint %d failed (%s): aborting it", checkpoint_id, cause)
        for sink in self._sinks:
            try:
                sink.abort(checkpoint_id)
            except Exception:
                log.error("aborting checkpoint %d failed too", checkpoint_id, exc_info=True)
