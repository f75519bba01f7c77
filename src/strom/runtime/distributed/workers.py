"""One worker of a pipeline run by several processes (``strom run --workers N``).

**Assignment: static.** Worker ``i`` of ``N`` reads partition ``p`` of every source, and of every
repartition topic, exactly when ``p % N == i`` (:func:`owned`). Every worker computes the same
answer from the same plan, so no coordination is needed and a key's state can never move: the
group protocol's rebalancing would hand a partition (and its keys) to another worker, which is only
correct once keyed state can follow it (changelogs, checkpoints), and strom has neither yet.
The repartition readers' consumer group is the app id (``--app-id``).

**Checkpoints** (``checkpoints=``, ``strom run --workers N --checkpoint-dir DIR``): each worker
checkpoints itself into ``DIR/worker-<i>`` (:class:`~strom.runtime.checkpoints.CheckpointedRun`
around its executor), with no coordination between workers. Exactly-once: all the worker's
writers on the repartition topics' cluster (its repartition writers, and its exactly-once
KafkaSinks there) write into one Kafka transaction per checkpoint, transactional id
``strom-<app>-worker-<i>``, whose commit is the checkpoint's decision; repartition readers read
read_committed. A worker's checkpoint is then a consistent cut by itself: its state and input
positions, and every row it wrote downstream, committed or aborted together (the Kafka Streams
model, rather than Flink's barriers aligned across workers: no worker waits for another's
barrier, and a failed worker restarts alone, fencing its predecessor, while the others run on).
The price is latency: rows cross each repartition topic at the writer's next checkpoint. Other
two-phase sinks are told their worker (``WorkerSink.set_worker``) so their staged data stays
apart. The run id (the repartition records' ``strom-run`` header) must stay the same across
restarts: ``strom run`` keeps it in ``DIR/run.json``.

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
from dataclasses import dataclass

from strom.connectors.deadletter import DeadLetterOutput
from strom.connectors.kafka.sink import KafkaSink
from strom.connectors.kafka.transaction import TransactionScope
from strom.engine.contracts import Guarantee, Metrics, WorkerSink
from strom.pipeline.plan import Plan
from strom.runtime.checkpoints import CheckpointedRun, CheckpointStore, Recovered
from strom.runtime.distributed.plan_split import (
    CutWriter,
    WorkerConfig,
    default_shuffle,
    find_cuts,
    split_plan,
)
from strom.runtime.distributed.repartition import Progress
from strom.runtime.distributed.shuffle import Shuffle
from strom.runtime.executor import StreamingExecutor
from strom.runtime.watermarks import MAX_WATERMARK

__all__ = ["Worker", "WorkerCheckpoints", "transaction_timeout_ms", "transactional_id"]

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
        checkpoints: WorkerCheckpoints | None = None,
    ) -> None:
        """``shuffle`` moves rows between the workers (default: repartition topics on
        ``config.bootstrap_servers``, see
        :func:`~strom.runtime.distributed.plan_split.default_shuffle`); ``checkpoints``: take
        them (see the module docstring)."""
        self.config = config
        self.clock = clock or (lambda: time.monotonic() * 1000.0)
        shuffle = shuffle or default_shuffle(plan, config)
        scope = _transaction(plan, config, checkpoints)
        self.transactional_id = None if scope is None else scope.transactional_id
        self.plan, self._writers = split_plan(plan, config, self.clock, shuffle, transaction=scope)
        self.executor = StreamingExecutor(self.plan, clock=self.clock)
        for w in self._writers:
            w.sink.latest_progress = functools.partial(self._progress, w)
        for found in self.executor.sinks():
            sink = found.sink if isinstance(found, DeadLetterOutput) else found
            if sink is None:
                continue
            if isinstance(sink, WorkerSink):
                sink.set_worker(config.index)
            if (
                scope is not None
                and isinstance(sink, KafkaSink)
                and sink.bootstrap_servers == scope.bootstrap_servers
            ):
                sink.share_transaction(scope)
        self.checkpoints: CheckpointedRun | None = None
        if checkpoints is not None:
            self.checkpoints = CheckpointedRun(
                self.executor,
                checkpoints.store,
                interval_ms=checkpoints.interval_ms,
                guarantee=checkpoints.guarantee,
                keep=checkpoints.keep,
                run_round=self._round,
            )

    @property
    def topics(self) -> list[str]:
        return [w.sink.topic for w in self._writers]

    def start(self) -> Recovered | None:
        """With checkpoints: lock the worker's directory and recover from its last checkpoint
        (the first :meth:`step` does it if needed); what was restored."""
        return None if self.checkpoints is None else self.checkpoints.start()

    def step(self) -> bool:
        """One round (:meth:`_round`), and a checkpoint if one is due; once the worker's input
        has ended, close (after the final checkpoint, with checkpoints)."""
        if self.checkpoints is not None:
            return self.checkpoints.step()
        more = self._round()
        if not more:
            self.close()
        return more

    def _round(self) -> bool:
        """One executor step, then each repartition writer's progress if it changed (all of
        it once the input has ended: its end of input)."""
        more = self.executor.step()
        if more:
            self._send_progress()
        else:
            for w in self._writers:
                progress = self._progress(w)
                if progress != w.sink.progress_sent:
                    w.sink.progress(progress)
        return more

    def run(self, *, max_rounds: int | None = None) -> None:
        rounds = 0
        while self.step():
            rounds += 1
            if max_rounds is not None and rounds >= max_rounds:
                return

    def close(self) -> None:
        """Close sinks and sources (sinks flush; with checkpoints after a final one); an
        unfinished run sends no end of input."""
        if self.checkpoints is not None:
            self.checkpoints.close()
        else:
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
        """Every component's metrics (the executor's; repartition writers are its sinks; the
        checkpoints', with checkpoints)."""
        if self.checkpoints is not None:
            return self.checkpoints.metrics()
        return self.executor.metrics()


@dataclass(frozen=True)
class WorkerCheckpoints:
    """How a worker checkpoints: into ``store`` (its own directory), every ``interval_ms``,
    with ``guarantee``, the newest ``keep`` kept (see
    :class:`~strom.runtime.checkpoints.CheckpointedRun`)."""

    store: CheckpointStore
    interval_ms: int = 1_000
    guarantee: Guarantee = "exactly-once"
    keep: int = 3


def transactional_id(app_id: str, index: int) -> str:
    """Worker ``index``'s transactional id (exactly-once checkpoints)."""
    return f"strom-{app_id}-worker-{index}"


def _transaction(
    plan: Plan, config: WorkerConfig, checkpoints: WorkerCheckpoints | None
) -> TransactionScope | None:
    """The worker's transaction: exactly-once checkpoints of a plan with repartition topics
    (its first topic carries the checkpoint record)."""
    if checkpoints is None or checkpoints.guarantee != "exactly-once":
        return None
    cuts = find_cuts(plan)
    if not cuts or config.bootstrap_servers is None:
        return None
    return TransactionScope(
        config.bootstrap_servers,
        transactional_id(config.app_id, config.index),
        topic=cuts[0].topic(config.app_id),
        transaction_timeout_ms=transaction_timeout_ms(checkpoints.interval_ms),
    )


#: The longest transaction timeout a Kafka broker accepts by default
#: (``transaction.max.timeout.ms``, 15 minutes).
MAX_TRANSACTION_TIMEOUT_MS = 900_000


def transaction_timeout_ms(interval_ms: int) -> int:
    """A worker transaction's timeout: a transaction spans a checkpoint interval and the
    checkpoint's write, so ten intervals (at least a minute, at most the broker's maximum;
    :class:`ValueError` for an interval too long for that)."""
    if 10 * interval_ms > MAX_TRANSACTION_TIMEOUT_MS:
        raise ValueError(
            f"a checkpoint interval of {interval_ms} ms is too long for exactly-once with "
            f"workers: a worker's transaction spans it, and a Kafka broker aborts transactions "
            f"open longer than {MAX_TRANSACTION_TIMEOUT_MS // 60_000} minutes; use at most "
            f"{MAX_TRANSACTION_TIMEOUT_MS // 10_000} s"
        )
    return max(60_000, 10 * interval_ms)
