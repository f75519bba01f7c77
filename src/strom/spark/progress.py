"""Task progress of the running Spark jobs, from Spark's status tracker.

A background thread polls ``SparkContext.statusTracker()`` (every ``interval`` seconds) and
shows one bar per active stage (tasks done / total, failed attempts) with rich on a terminal,
or one plain line per finished stage otherwise. It only reads Spark's counters: the jobs run
the same with it or without it. Failed attempts are counted from the stages seen while they
ran; stages are found through the jobs started since the block began, so one that starts and
ends between two polls is counted too.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType

from pyspark.sql import SparkSession
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn


class SparkProgress:
    """A context manager showing the stages' progress while its block runs; afterwards
    :attr:`tasks_done` and :attr:`tasks_failed` sum every stage it saw."""

    def __init__(self, spark: SparkSession, *, enabled: bool = True, interval: float = 0.5):
        self._tracker = spark.sparkContext.statusTracker()
        self._enabled = enabled
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="strom-spark-progress", daemon=True)
        self._stages: dict[int, tuple[int, int, int]] = {}  # id -> (done, total, failed)
        self._console = Console(stderr=True)
        self._progress: Progress | None = None
        self._bars: dict[int, TaskID] = {}
        self._old_jobs: set[int] = set()  # jobs that ran before this block (not ours)

    @property
    def tasks_done(self) -> int:
        return sum(done for done, _, _ in self._stages.values())

    @property
    def tasks_failed(self) -> int:
        return sum(failed for _, _, failed in self._stages.values())

    def __enter__(self) -> SparkProgress:
        if self._enabled and self._console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                console=self._console,
                transient=False,
            )
            self._progress.start()
        self._old_jobs = set(self._tracker.getJobIdsForGroup())
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        if self._progress is not None:
            self._progress.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._poll()

    def _poll(self) -> None:
        seen = set(self._stages)
        seen.update(self._tracker.getActiveStageIds())
        for job_id in self._tracker.getJobIdsForGroup():
            job = self._tracker.getJobInfo(job_id)
            if job_id not in self._old_jobs and job is not None:
                seen.update(job.stageIds)
        for stage_id in sorted(seen):
            info = self._tracker.getStageInfo(stage_id)
            if info is None:
                continue
            now = (info.numCompletedTasks, info.numTasks, info.numFailedTasks)
            before = self._stages.get(stage_id)
            self._stages[stage_id] = now
            if now != before:
                self._show(stage_id, info.name, *now)

    def _show(self, stage_id: int, name: str, done: int, total: int, failed: int) -> None:
        if not self._enabled:
            return
        label = f"stage {stage_id} ({name.split(' at ')[0]})"
        if self._progress is not None:
            if stage_id not in self._bars:
                self._bars[stage_id] = self._progress.add_task(label, total=total, failed=0)
            self._progress.update(self._bars[stage_id], completed=done, failed=failed)
        elif done == total:
            print(f"{label}: {done}/{total} tasks, {failed} failed", file=sys.stderr, flush=True)
