"""The driver: splits each job into tasks, schedules them on worker processes, retries them
from their inputs (lineage), and commits the outputs.

Guarantees:

- **Lineage.** The driver keeps the task graph of every job: its stages in order, each map
  tasks over files or an earlier stage's results, then reduce tasks over the map tasks' shuffle
  files. A task whose attempt fails (an exception, its worker killed) runs again on the same
  inputs; a task that finds an input gone (or torn) — a shuffle file, or a result file of an
  earlier stage — sends the task that wrote it back to run (that one may in turn send its own
  producers), then runs itself once no task of an earlier level is left to run. Each task has at
  most ``max_task_attempts`` attempts; then the run fails with :class:`TaskFailed` naming the
  task and its files. Tasks are deterministic and reduce tasks fold their inputs in a fixed
  order, so a run with retries gives the same result as one without.
- **Commit.** Outputs are written under temporary names, committed per task, then per job
  (:mod:`strom.batch.commit`, ``_SUCCESS``; a stage's results, which only later stages read,
  are committed per task and read in task order); a :class:`~strom.connectors.files.FileSink`'s
  directory is the output itself, other sinks get each committed output as one batch when the
  job commits (at-least-once, like the sinks themselves).
- **Memory.** ``memory`` is shared as :class:`~strom.batch.memory.Budget` says: map tasks hold
  at most ``task_input`` bytes of files, shuffles go to disk (Arrow IPC), reduce buckets are
  sized to a worker's share, and a worker whose memory (anonymous) grows past its share is replaced
  between tasks.
- **Bad files.** ``on_bad_file="fail"`` fails the run with :class:`BadFileError` naming the
  file and the reason; ``"skip"`` leaves the file out and lists it in the report (and in
  ``<work_dir>/bad_files.ndjson``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle
import polars as pl

from strom.batch.broadcast import BROADCAST_BYTES, Broadcast, choose, limit
from strom.batch.execute import BadFilePolicy, Context, TaskResult
from strom.batch.memory import MIB, Budget, parse_size, tree_resident
from strom.batch.planner import JobSpec, JoinStage, SinkJob, SortStage, StageSpec, lower
from strom.batch.pool import Event, Pool
from strom.batch.progress import Progress
from strom.batch.sort import bounds
from strom.batch.tasks import (
    MapTask,
    ReduceTask,
    ShuffleInput,
    Task,
    coalesce,
    file_size,
    input_paths,
    pack,
    task_prefix,
)
from strom.pipeline.plan import Plan
from strom.pipeline.stream import Pipeline

MAX_BUCKETS = 4096
"""Shuffle buckets of a job at most (each map task writes one file per non-empty bucket)."""


class TaskFailed(RuntimeError):
    """A task failed on every one of its attempts."""


class BadFileError(RuntimeError):
    """An input file cannot be read (with ``on_bad_file="fail"``)."""


@dataclass
class RunReport:
    """What a run did: rows written per sink, retries, skipped files, peak memory."""

    rows_out: list[int] = field(default_factory=list)
    tasks: int = 0
    retries: int = 0
    bad_files: list[dict[str, str]] = field(default_factory=list)
    peak_resident: int = 0
    workers: int = 0
    wall_s: float = 0.0
    work_dir: str = ""
    """Shuffle files and ``bad_files.ndjson``; a temporary one is removed unless files were
    skipped."""


def run_local(
    pipeline: Pipeline | Plan,
    *,
    workers: int | None = None,
    memory: int | str = "4GiB",
    max_task_attempts: int = 4,
    on_bad_file: BadFilePolicy = "fail",
    progress: Progress | None = None,
    work_dir: str | Path | None = None,
    broadcast: int | str = BROADCAST_BYTES,
) -> RunReport:
    """Run a bounded pipeline on the local engine (worker processes, task retry, shuffles on
    disk, bounded memory); see :mod:`strom.batch`. A join input of at most ``broadcast`` bytes
    of files (and a sixteenth of a worker's working memory under ``memory``:
    :func:`strom.batch.broadcast.limit`) is read whole by every task of the other input instead
    of shuffling both (:mod:`strom.batch.broadcast`; 0: never)."""
    plan = pipeline.plan() if isinstance(pipeline, Pipeline) else pipeline
    engine = LocalEngine(
        plan,
        workers=workers,
        memory=memory,
        max_task_attempts=max_task_attempts,
        on_bad_file=on_bad_file,
        progress=progress,
        work_dir=work_dir,
        broadcast=broadcast,
    )
    return engine.run()


class LocalEngine:
    def __init__(
        self,
        plan: Plan,
        *,
        workers: int | None = None,
        memory: int | str = "4GiB",
        max_task_attempts: int = 4,
        on_bad_file: BadFilePolicy = "fail",
        progress: Progress | None = None,
        work_dir: str | Path | None = None,
        broadcast: int | str = BROADCAST_BYTES,
    ) -> None:
        if max_task_attempts < 1:
            raise ValueError("max_task_attempts must be >= 1")
        if on_bad_file not in ("fail", "skip"):
            raise ValueError(f"on_bad_file must be 'fail' or 'skip', not {on_bad_file!r}")
        self.jobs: list[SinkJob] = lower(plan)  # PlanError before any process starts
        size = parse_size(memory) if isinstance(memory, str) else memory
        self.budget = Budget.plan(size, workers or os.cpu_count() or 1)
        most = parse_size(broadcast) if isinstance(broadcast, str) else broadcast
        self.broadcast_limit = limit(self.budget, most)
        self.max_attempts = max_task_attempts
        self.on_bad_file: BadFilePolicy = on_bad_file
        self.progress = progress or Progress()
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path()
        self.report = RunReport(workers=self.budget.workers)

    def run(self) -> RunReport:
        started = time.monotonic()
        if self._own_work_dir:
            self.work_dir = Path(tempfile.mkdtemp(prefix="strom-batch-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.report.work_dir = str(self.work_dir)
        (self.work_dir / "bad_files.ndjson").unlink(missing_ok=True)
        jobs_file = self.work_dir / "jobs.pickle"
        with jobs_file.open("wb") as f:
            cloudpickle.dump({job.spec.index: job.spec for job in self.jobs}, f)
        threads = max(1, (os.cpu_count() or 1) // self.budget.workers)
        pool = Pool(self.budget.workers, str(jobs_file), threads)
        try:
            for job in self.jobs:
                self.report.rows_out.append(self._run_job(pool, job))
        finally:
            pool.close()
            self.progress.close()
            jobs_file.unlink(missing_ok=True)
            for job in self.jobs:
                for stage in (self.work_dir / f"job-{job.spec.index}").glob("stage-*"):
                    shutil.rmtree(stage, ignore_errors=True)
            if self._own_work_dir and not self.report.bad_files:
                shutil.rmtree(self.work_dir, ignore_errors=True)
        self.report.wall_s = time.monotonic() - started
        return self.report

    # -- one job -----------------------------------------------------------------------------

    def _run_job(self, pool: Pool, job: SinkJob) -> int:
        spec = job.spec
        shutil.rmtree(self.work_dir / f"job-{spec.index}", ignore_errors=True)
        last_stage = len(spec.stages) - 1
        committer = Context(str(self.work_dir), 1, self.on_bad_file).committer(spec, last_stage)
        committer.start()
        schedule = _Schedule(self, pool, spec)
        outputs: dict[int, list[str]] = {}
        final: list[Task] = []
        for stage in spec.stages:
            final = self._run_stage(schedule, stage, outputs)
        published = committer.commit_job([t.id for t in final])
        if spec.output.directory is None:
            sink = job.sink
            sink.open()
            try:
                for output in published:
                    sink.write(pl.read_ipc(output))
            finally:
                sink.close()
        return sum(schedule.results[t.id].rows for t in final)

    def _run_stage(
        self, schedule: _Schedule, stage: StageSpec, outputs: dict[int, list[str]]
    ) -> list[Task]:
        """Run ``stage``'s map tasks, then its reduce tasks; its results' files (an earlier
        stage's: the next stages' input) go to ``outputs``. Returns the tasks that wrote them."""
        spec = schedule.job
        broadcast = self._broadcast(stage, outputs)
        skip = {b for b, _ in broadcast.branches} if broadcast else set()
        streamed = [b for i, b in enumerate(stage.branches) if i not in skip]
        paths = [p for b in streamed for run in input_paths(b, outputs) for p in run]
        total = sum(map(file_size, paths))
        # at least ~4 tasks per worker when the input is small, so that every worker has work
        # and a retry recomputes little; at most the budget's bytes per task
        target = min(self.budget.task_input, max(MIB, total // (4 * self.budget.workers)))
        maps = pack(spec.index, stage.branches, target, stage.index, outputs, skip)
        buckets = 1
        if stage.stage is not None and broadcast is None:
            estimate = sum(t.size for t in maps) * stage.stage.fanout
            buckets = max(self.budget.workers, -(-estimate // self.budget.reduce_input))
            buckets = min(buckets, MAX_BUCKETS)
        context = Context(str(self.work_dir), buckets, self.on_bad_file, broadcast)
        schedule.contexts[stage.index] = context
        if not spec.is_last(stage.index):
            context.committer(spec, stage.index).start()
        name = f"job {spec.index}" + (f" stage {stage.index}" if stage.index else "")
        self.progress.stage_started(f"{name} map", len(maps), sum(t.size for t in maps))
        done = schedule.run(f"{name} map", maps)
        self.progress.stage_done(f"{name} map")
        final: list[Task] = list(maps)
        if stage.stage is not None and broadcast is None:
            reduces = self._reduces(spec.index, stage, maps, done, buckets)
            self.progress.stage_started(f"{name} reduce", len(reduces), 0)
            schedule.run(f"{name} reduce", reduces)
            self.progress.stage_done(f"{name} reduce")
            final = list(reduces)
        if not spec.is_last(stage.index):
            committer = context.committer(spec, stage.index)
            committed = (committer.committed_path(t.id) for t in final)
            outputs[stage.index] = [str(p) for p in committed if p.exists()]
        return final

    def _broadcast(self, stage: StageSpec, outputs: dict[int, list[str]]) -> Broadcast | None:
        """How a join stage reads its small input (:mod:`strom.batch.broadcast`), or None to
        shuffle both (or not a join)."""
        if not isinstance(stage.stage, JoinStage):
            return None
        files = [[p for run in input_paths(b, outputs) for p in run] for b in stage.branches]
        sizes = [0, 0]
        for b, paths in zip(stage.branches, files, strict=True):
            sizes[b.side] += sum(map(file_size, paths))
        side = choose(stage.stage.node.how, sizes[0], sizes[1], self.broadcast_limit)
        if side is None:
            return None
        chosen = tuple(
            (i, tuple(paths))
            for i, (b, paths) in enumerate(zip(stage.branches, files, strict=True))
            if b.side == side
        )
        return Broadcast(side, chosen)

    def _reduces(
        self,
        job: int,
        stage: StageSpec,
        maps: list[MapTask],
        done: dict[str, TaskResult],
        buckets: int,
    ) -> list[ReduceTask]:
        """The stage's reduce tasks over its map tasks' shuffle files (``buckets`` of them)."""
        prefix = task_prefix(job, stage.index)
        sizes = [0] * buckets
        for m in maps:
            for b, size in done[m.id].shuffle_bytes.items():
                sizes[b] += size
        # at least one reduce task per worker (when there are buckets enough)
        share = max(1, min(self.budget.reduce_input, -(-sum(sizes) // self.budget.workers)))
        if isinstance(stage.stage, SortStage):
            return self._ranges(job, stage, stage.stage, maps, done, sizes[0])
        groups = coalesce(sizes, share)
        return [
            ReduceTask(
                f"{prefix}-reduce-{n:05d}",
                job,
                tuple(group),
                tuple(
                    ShuffleInput(m.id, done[m.id].shuffle[b], stage.branches[m.branch].side)
                    for b in group
                    for m in maps
                    if b in done[m.id].shuffle
                ),
                stage.index,
            )
            for n, group in enumerate(groups)
        ]

    def _ranges(
        self,
        job: int,
        stage: StageSpec,
        sort: SortStage,
        maps: list[MapTask],
        done: dict[str, TaskResult],
        size: int,
    ) -> list[ReduceTask]:
        """A sort's reduce tasks: one per range of about ``reduce_input`` bytes of its runs
        (one per worker at least, for runs of a MiB or more), each reading every run."""
        runs = tuple(ShuffleInput(m.id, done[m.id].shuffle[0]) for m in maps if done[m.id].shuffle)
        if not runs:
            return []
        ranges = -(-size // self.budget.reduce_input)
        ranges = max(ranges, min(self.budget.workers, -(-size // MIB)))
        samples = [r.sample for m in maps if (r := done[m.id]).sample is not None]
        cuts = bounds(sort, [s for s in samples if s is not None and s.height], ranges)
        prefix = task_prefix(job, stage.index)
        return [
            ReduceTask(f"{prefix}-reduce-{n:05d}", job, (n,), runs, stage.index, (low, high))
            for n, (low, high) in enumerate(itertools.pairwise(cuts))
        ]

    def record_bad_file(self, stage: str, task: Task, path: str, reason: str) -> None:
        if any(r["file"] == path for r in self.report.bad_files):
            return  # a broadcast input's file: every task that reads it skips it
        record = {"file": path, "reason": reason, "task": task.id}
        self.report.bad_files.append(record)
        with (self.work_dir / "bad_files.ndjson").open("a") as out:
            out.write(json.dumps(record) + "\n")
        self.progress.skipped(stage, path, reason)

    def sample_memory(self) -> None:
        self.report.peak_resident = max(self.report.peak_resident, tree_resident(os.getpid()))


def _level(task: Task) -> int:
    """Tasks of a lower level write what tasks of a higher one read."""
    return 2 * task.stage + isinstance(task, ReduceTask)


class _Schedule:
    """Runs a job's tasks on the pool, a stage at a time; a task that finds an input file lost
    sends the task that wrote it (of any earlier stage) back to run, and waits for it."""

    def __init__(self, engine: LocalEngine, pool: Pool, job: JobSpec) -> None:
        self.engine = engine
        self.pool = pool
        self.job = job
        self.contexts: dict[int, Context] = {}
        self.attempts: Counter[str] = Counter()
        self.results: dict[str, TaskResult] = {}
        self.writers: dict[str, Task] = {}
        """Each shuffle file and stage result file: the task that writes it."""

    def run(self, stage: str, tasks: Sequence[Task]) -> dict[str, TaskResult]:
        pending: deque[Task] = deque(tasks)
        waiting: list[Task] = []  # tasks waiting for a lost input to be written again
        stage_ids = {t.id for t in tasks}
        finished: dict[str, TaskResult] = {}
        while pending or waiting or self.pool.running():
            for task in list(waiting):
                if not self._blocked(task, pending):
                    waiting.remove(task)
                    pending.append(task)
            for worker in self.pool.idle():
                if not pending:
                    break
                task = pending.popleft()
                message = (self.job.index, task, self.attempts[task.id], self.contexts[task.stage])
                self.pool.send(worker, task, message)
            for event in self.pool.wait(0.2):
                self._handle(stage, event, pending, waiting, finished, stage_ids)
            self.engine.sample_memory()
        return finished

    def _blocked(self, task: Task, pending: deque[Task]) -> bool:
        """Whether a task that may write ``task``'s inputs is still to run or running."""
        level = _level(task)
        running = [w.busy for w in self.pool.running()]
        return any(_level(t) < level for t in (*pending, *running))

    def _handle(
        self,
        stage: str,
        event: Event,
        pending: deque[Task],
        waiting: list[Task],
        finished: dict[str, TaskResult],
        stage_ids: set[str],
    ) -> None:
        engine, worker = self.engine, event.worker
        task: Task | None = worker.busy
        worker.busy = None
        reply = event.reply
        if reply is None:  # the worker died
            self.pool.start()
            if task is None:  # it died idle (an OOM killer, an operator): nothing to run again
                return
            code = event.exitcode
            name = signal.Signals(-code).name if code is not None and code < 0 else None
            why = f"signal {name}" if name else f"exit code {code}"
            self._failed(stage, task, pending, f"its worker process died ({why})")
            return
        assert task is not None, "a reply from a worker that was given no task"
        kind = reply[0]
        if kind == "ok":
            result: TaskResult = reply[1]
            attempt = self.attempts[task.id]
            context = self.contexts[task.stage]
            map_only = self.job.stages[task.stage].stage is None or context.broadcast is not None
            if isinstance(task, ReduceTask) or map_only:
                committer = context.committer(self.job, task.stage)
                committed = committer.commit_task(task.id, attempt)
                if committed is not None:
                    self.writers[str(committed)] = task
            for path in result.shuffle.values():
                self.writers[path] = task
            for path, reason in result.skipped:
                engine.record_bad_file(stage, task, path, reason)
            self.results[task.id] = result
            if task.id in stage_ids:
                finished[task.id] = result
                engine.report.tasks += 1
                engine.progress.task_done(stage, result.rows, result.bytes_read)
            if result.resident > engine.budget.per_worker:
                self.pool.retire(worker)
                self.pool.start()
        elif kind == "bad_file":
            _, path, reason = reply
            raise BadFileError(f"bad input file {path}: {reason} (in {task.describe()})")
        elif kind == "lost":
            queued = {t.id for t in pending} | {w.busy.id for w in self.pool.running()}
            for path in reply[1]:
                writer = self.writers[path]
                if writer.id in queued:
                    continue
                queued.add(writer.id)
                self._count_attempt(writer, f"its output {path} was lost", stage)
                pending.appendleft(writer)
            waiting.append(task)
        else:
            _, message, _traceback = reply
            self._failed(stage, task, pending, message)

    def _failed(self, stage: str, task: Task, pending: deque[Task], reason: str) -> None:
        self._count_attempt(task, reason, stage)
        pending.append(task)

    def _count_attempt(self, task: Task, reason: str, stage: str) -> None:
        self.attempts[task.id] += 1
        used = self.attempts[task.id]
        if used >= self.engine.max_attempts:
            raise TaskFailed(
                f"{task.describe()} failed {used} time(s) (--max-task-attempts "
                f"{self.engine.max_attempts}); last: {reason}"
            )
        self.engine.report.retries += 1
        self.engine.progress.retried(stage, task.id, reason)
