"""Checkpoints of a single-process run, taken between rounds.

A single-process executor is synchronous: between two rounds no message is in flight, so that
boundary is a consistent cut and needs no barriers. Checkpoint ``c``:

1. ``executor.snapshot()``: every source position and every stateful operator's state, copied
   (the *pause*: the only part that must not overlap processing); the deciding sink is handed
   the positions (``stage_positions``, to commit them with its decision);
2. every sink's ``pre_commit(c)`` (durable, or staged for a two-phase sink);
3. checkpoint ``c`` written atomically (:class:`~.store.CheckpointStore`);
4. the decision: the written manifest is it, unless a sink decides
   (:class:`~strom.engine.contracts.CommitDecider`): that sink's ``commit(c)`` first, then the
   manifest is marked committed;
5. every other sink's ``commit(c)``; then checkpoints beyond the newest ``keep`` are deleted.

A failure in 1-3 aborts ``c`` at every sink and fails the run (its state and the sinks no longer
agree; a restart recovers from the last decided checkpoint). A failure in 4-5 fails the run too;
recovery commits the decided checkpoint again (commits are idempotent).

:class:`CheckpointedRun` drives an executor with it: a checkpoint every ``interval_ms`` (0: every
round), a final one when the input ends or the run is stopped, then the sinks are closed, so
the last outputs are committed exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strom.engine.contracts import CommitDecider, Guarantee, Metrics, Position, Sink, Source
from strom.runtime.checkpoints.faults import crash_point
from strom.runtime.checkpoints.fingerprint import fingerprint
from strom.runtime.checkpoints.recovery import Recovered, check_sinks, recover, sink_id
from strom.runtime.checkpoints.store import CheckpointStore, Manifest, now_ms

if TYPE_CHECKING:
    from strom.runtime.executor import StreamingExecutor

__all__ = ["CheckpointStats", "CheckpointedRun"]

log = logging.getLogger("strom.checkpoints")


@dataclass
class CheckpointStats:
    """What the checkpoints of a run cost: ``count`` taken, and the last one's ``id``,
    ``duration_us`` (snapshot to commit), ``pause_us`` (the snapshot's copy), ``size`` (bytes
    of state) and ``write_us`` (serialization and files)."""

    count: int = 0
    id: int = 0
    duration_us: int = 0
    pause_us: int = 0
    write_us: int = 0
    size: int = 0
    restored: int = 0


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
    ) -> None:
        if interval_ms < 0:
            raise ValueError(f"the checkpoint interval must be >= 0 ms, not {interval_ms}")
        if keep < 1:
            raise ValueError(f"at least one checkpoint must be kept, not {keep}")
        self.executor = executor
        self.store = store
        self.interval_ms = interval_ms
        self.guarantee = guarantee
        self.keep = keep
        self.stats = CheckpointStats()
        self.recovered: Recovered | None = None
        self._sinks: list[Sink] = executor.sinks()
        self._decider: Sink | None = check_sinks(self._sinks, guarantee)
        self._fingerprint = fingerprint(executor)
        self._next_id = 1
        self._due_at = 0.0
        self._failed = False
        self._closed = False

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
        """One round, then a checkpoint if one is due; False once the input has ended (the
        final checkpoint is then taken and the run closed)."""
        self.start()
        try:
            more = self.executor.step()
            if more and time.monotonic() >= self._due_at:
                self.checkpoint()
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
        """Take the next checkpoint now (between rounds); returns its manifest."""
        self.start()
        checkpoint_id = self._next_id
        self._next_id += 1
        started = time.perf_counter_ns()
        wall = now_ms()
        try:
            snapshot = self.executor.snapshot()
            paused = time.perf_counter_ns()
            if isinstance(self._decider, CommitDecider):
                self._decider.stage_positions(checkpoint_id, self._positions(snapshot.positions))
            for sink in self._sinks:
                sink.pre_commit(checkpoint_id)
            crash_point("pre-committed")
            written = time.perf_counter_ns()
            manifest = self.store.write(
                checkpoint_id,
                snapshot,
                fingerprint=self._fingerprint,
                guarantee=self.guarantee,
                decider=self._decider_id(),
                wall_time_ms=wall,
                pause_us=(paused - started) // 1000,
            )
            write_us = (time.perf_counter_ns() - written) // 1000
        except BaseException as exc:
            self._failed = True
            self._abort(checkpoint_id, exc)
            raise
        if self._decider is not None:
            crash_point("written")
            self._decider.commit(checkpoint_id)  # the decision
            crash_point("decided")
            manifest = self.store.mark_committed(manifest)
        for sink in self._sinks:
            if sink is not self._decider:
                sink.commit(checkpoint_id)
        self.store.retain(self.keep)
        self._due_at = time.monotonic() + self.interval_ms / 1000
        self.stats.count += 1
        self.stats.id = checkpoint_id
        self.stats.duration_us = (time.perf_counter_ns() - started) // 1000
        self.stats.pause_us = manifest.pause_us
        self.stats.write_us = write_us
        self.stats.size = manifest.size
        return manifest

    def close(self) -> None:
        """The final checkpoint (unless a step or checkpoint failed, or the run never
        started), then close the executor (sinks, then sources); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.recovered is not None and not self._failed:
                self.checkpoint()
        finally:
            try:
                self.executor.close()
            finally:
                self.store.unlock()

    def metrics(self) -> dict[str, Metrics]:
        """The executor's metrics and a ``checkpoints`` row (count, last id, duration, pause,
        write time, size; times in microseconds, size in bytes)."""
        out = self.executor.metrics()
        s = self.stats
        detail = {"count": s.count, "last_id": s.id, "duration_us": s.duration_us,
                  "pause_us": s.pause_us, "write_us": s.write_us, "size_bytes": s.size,
                  "restored_id": s.restored}  # fmt: skip
        out["checkpoints"] = Metrics(label=f"{self.store.path} ({self.guarantee})", detail=detail)
        return out

    def _positions(
        self, positions: Mapping[str, Sequence[Position]]
    ) -> list[tuple[Source, Sequence[Position]]]:
        """A snapshot's positions with each source object (for the decider)."""
        return [(n.source, positions.get(n.name, [])) for n in self.executor.plan.sources()]

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
