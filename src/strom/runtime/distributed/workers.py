"""One worker of a pipeline run by several processes (``strom run --workers N``).

**Assignment: static.** Worker ``i`` of ``N`` reads partition ``p`` of every source, and of every
repartition topic, exactly when ``p % N == i`` (:func:`owned`). Every worker computes the same
answer from the same plan, so no coordination is needed and a key's state can never move: the
group protocol's rebalancing would hand a partition (and its keys) to another worker, which is only
correct once keyed state can follow it (changelogs, checkpoints), and strom has neither yet.
The repartition readers' consumer group is the app id (``--app-id``); nothing is committed yet
(there are no checkpoints), so a restarted run starts over, under a new run id.

**Stages.** :func:`~strom.runtime.distributed.plan_split.split_plan` cuts the plan before every
keyed operator (windows, process functions, interval joins): the rows entering it go through a
:class:`~strom.runtime.distributed.shuffle.Shuffle` by key (by default repartition topics
``<app>-repartition-<n>``, :mod:`strom.runtime.distributed.repartition`), and the operator reads
its worker's partitions of the cut instead. A :class:`Worker` cuts for any ``N`` (one worker
too), so a run's results never depend on its worker count (``strom run`` without ``--workers``
runs the plain executor, with no cut). The rewritten plan is an ordinary plan, run by one
:class:`StreamingExecutor` per worker; after every step the worker tells each cut how far its
event time has got (a :class:`WatermarkTracker` over exactly the partitions upstream of the
cut, fed by the readers: :mod:`strom.runtime.distributed.shares`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from strom.engine.contracts import Metrics
from strom.pipeline.plan import Plan
from strom.runtime.distributed.plan_split import (
    CutWriter,
    WorkerConfig,
    default_shuffle,
    split_plan,
)
from strom.runtime.distributed.repartition import Progress
from strom.runtime.distributed.shuffle import Shuffle
from strom.runtime.executor import StreamingExecutor
from strom.runtime.watermarks import MAX_WATERMARK

__all__ = ["Worker"]

Clock = Callable[[], float]
#: The least processing time between two progress records of one writer while its watermark
#: moves (ending, and turning idle or active, are sent at once).
PROGRESS_INTERVAL_MS = 20.0


class Worker:
    """Runs worker ``config.index``'s share of ``plan``: :meth:`step` until it returns False.

    Sinks receive only this worker's keys' results (each key lives in one worker); rows that need
    no key go to the sinks of the worker that read them. So every worker's sink writes to the same
    table: a SQLite file is shared safely (WAL journal; SQLite serializes the writers, and a
    writer waits up to Python's 5 s busy timeout for the lock), and upserts never conflict since
    each key's rows come from one worker.
    """

    def __init__(
        self,
        plan: Plan,
        config: WorkerConfig,
        *,
        clock: Clock | None = None,
        shuffle: Shuffle | None = None,
    ) -> None:
        """``shuffle`` moves rows between the workers (default: repartition topics on
        ``config.bootstrap_servers``, see
        :func:`~strom.runtime.distributed.plan_split.default_shuffle`)."""
        self.config = config
        self.clock = clock or (lambda: time.monotonic() * 1000.0)
        shuffle = shuffle or default_shuffle(plan, config)
        self.plan, self._writers = split_plan(plan, config, self.clock, shuffle)
        self.executor = StreamingExecutor(self.plan, clock=self.clock)
        for w in self._writers:
            w.sink.latest_progress = functools.partial(self._progress, w)

    @property
    def topics(self) -> list[str]:
        return [w.sink.topic for w in self._writers]

    def step(self) -> bool:
        """One executor step, then each repartition writer's progress if it changed; once the
        worker's input has ended, close (the writers send their end of input then)."""
        more = self.executor.step()
        if more:
            self._send_progress()
        else:
            self.close()
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

    def _progress(self, writer: CutWriter) -> Progress:
        now = self.clock()
        watermark = writer.tracker.advance(now)
        ended = watermark == MAX_WATERMARK
        return Progress(watermark, not ended and writer.tracker.idle(now), ended)

    def metrics(self) -> dict[str, Metrics]:
        """Every component's metrics (the executor's; repartition writers are its sinks)."""
        return self.executor.metrics()
