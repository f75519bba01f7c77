"""What a worker does with one task: pure functions of the task, its attempt and its inputs.

**Map** (window and keyed aggregation jobs): the task's files, cast to the source's schema,
through the branch's stateless steps; each row gets, where the stage needs them, its event time
(a keyed aggregation's ``first``/``last`` order time, :func:`~strom.engine.relational.order_time`),
its source partition and an order key (:data:`~strom.batch.tasks.SEQ_FILE_SHIFT`); rows are
assigned their windows (if any) and pre-aggregated per (keys[, window]) by the aggregations' partial
expressions (Polars' streaming engine when no aggregation needs row order), then written to one
shuffle file per bucket. **Map** (joins, top-k, distinct: :mod:`strom.batch.relational`): the
task's rows that can be in the result, bucketed by their join key or distinct value (top-k: one
bucket; a full sort: :mod:`strom.batch.sort`). **Map** (a map-only last stage): the rows go
straight to the task's output file. A map task over an earlier stage's results reads its
committed Arrow IPC files; one gone or torn is a :class:`LostShuffle` (its writer runs again),
never a bad file. Every map task keeps only the columns its branch delivers
(:mod:`strom.batch.columns`).

**Reduce** (aggregations): its buckets' shuffle files, in (bucket, map task) order; partial
rows are folded into the columnar window state the streaming runtime uses
(:mod:`strom.runtime.windows.state`, the aggregations' own merge rules), one (map task,
partition) chunk at a time, so the results are the same values the single-process runner
computes, and the same on every attempt. Results are sorted as that runner sorts them, then the
post-stage steps run (in the job's last stage: an earlier stage's results go as they are to
the next stage's map tasks, which run the steps between) and the output is written.
**Reduce** (joins, top-k, distinct): the single-process runner's definition over the buckets'
rows (:mod:`strom.batch.relational`); a sort: its range of every run (:mod:`strom.batch.sort`).

A file that fails to read is found by reading the task's files one at a time: with
``on_bad_file="fail"`` it is a :class:`BadFile` (the driver stops the job naming it); with
``"skip"`` the task runs again without it and reports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, assert_never

import numpy as np
import polars as pl

from strom.batch.broadcast import Broadcast
from strom.batch.commit import OutputCommitter
from strom.batch.planner import (
    AggStage,
    Branch,
    DistinctStage,
    JobSpec,
    JoinStage,
    SortStage,
    StageInput,
    StageSpec,
    TopKStage,
    WindowStage,
)
from strom.batch.relational import (
    broadcast_join,
    join_bucket,
    join_rows,
    ordered_bucket,
    ordered_rows,
)
from strom.batch.shuffle import missing, write_buckets
from strom.batch.sort import range_rows, sorted_run
from strom.batch.tasks import SEQ_FILE_SHIFT, FileInput, MapTask, ReduceTask, file_size
from strom.connectors.files import FileSource
from strom.engine.aggregations import Count, Max, Min, Sum
from strom.engine.constants import IS_UPDATE, PART, SEQ, TS
from strom.engine.relational import needs_positions, order_time
from strom.engine.transforms import apply_exprs, apply_transform
from strom.pipeline.plan import FilterNode, SelectNode, StatelessNode, WithColumnsNode
from strom.pipeline.windows import assign_windows_lazy, event_time_ms
from strom.runtime.windows.accumulators import Accumulators, partial_prefix
from strom.runtime.windows.state import WindowState

BadFilePolicy = Literal["fail", "skip"]
_ROWS = "__strom_rows"
_NULLS = "__strom_null_ts"
_CHUNK = "__strom_chunk"


class BadFile(Exception):
    """A file of the task cannot be read as its source's format and schema."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class LostShuffle(Exception):
    """Shuffle files a reduce task needs are gone: their map tasks must run again."""

    def __init__(self, paths: Sequence[str]) -> None:
        super().__init__(f"shuffle file(s) missing: {', '.join(paths)}")
        self.paths = list(paths)


@dataclass(frozen=True)
class Context:
    """Where a stage's files go, and how its tasks treat bad files."""

    work_dir: str
    buckets: int
    on_bad_file: BadFilePolicy
    broadcast: Broadcast | None = None
    """A join stage run as a broadcast join: the input every map task reads whole."""

    def stage_dir(self, job: int, stage: int) -> Path:
        return Path(self.work_dir) / f"job-{job}" / f"stage-{stage}"

    def shuffle_dir(self, job: int, stage: int) -> Path:
        return self.stage_dir(job, stage) / "shuffle"

    def committer(self, job: JobSpec, stage: int) -> OutputCommitter:
        """Where stage ``stage``'s tasks write: the job's output for its last stage, else the
        stage's results (Arrow IPC, which the next stage's map tasks read)."""
        if not job.is_last(stage):
            return OutputCommitter(self.stage_dir(job.index, stage) / "output", "arrow")
        if job.output.directory is None:
            return OutputCommitter(Path(self.work_dir) / f"job-{job.index}" / "output", "arrow")
        return OutputCommitter(Path(job.output.directory), job.output.format)


@dataclass
class TaskResult:
    rows: int = 0
    bytes_read: int = 0
    shuffle: dict[int, str] = field(default_factory=dict)
    """Map tasks of jobs with a stage: each non-empty bucket's shuffle file."""
    shuffle_bytes: dict[int, int] = field(default_factory=dict)
    """The size of each of those files."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Files skipped as bad: (path, reason)."""
    resident: int = 0
    """The worker's memory (:func:`~strom.batch.memory.resident`) after the task."""
    sample: pl.DataFrame | None = None
    """A sort's map task: the sample of its run (:func:`strom.batch.sort.sorted_run`)."""


def run_task(
    job: JobSpec, task: MapTask | ReduceTask, attempt: int, context: Context
) -> TaskResult:
    if isinstance(task, ReduceTask):
        return _reduce(job, task, attempt, context)
    files = list(task.files)
    stage = job.stages[task.stage]
    source = stage.branches[task.branch].source
    # the broadcast input's files, per branch: read whole by this task too
    broadcast = (
        {b: list(paths) for b, paths in context.broadcast.branches} if context.broadcast else {}
    )
    # an earlier stage's results: lost, not bad, if unread
    results = [f.path for f in files] if isinstance(source, StageInput) else []
    for b, paths in broadcast.items():
        if isinstance(stage.branches[b].source, StageInput):
            results += paths
    _check_readable(results)
    skipped: list[tuple[str, str]] = []
    while True:
        try:
            result = _map(job, task, files, attempt, context, broadcast)
        except Exception as exc:
            bad = _find_bad(stage, task.branch, [f.path for f in files], broadcast)
            if bad is None:
                raise
            path, reason = bad
            reason = reason.replace(path, "<file>")[:500]
            if context.on_bad_file == "fail":
                raise BadFile(path, reason) from exc
            skipped.append((path, reason))
            files = [f for f in files if f.path != path]
            broadcast = {b: [p for p in paths if p != path] for b, paths in broadcast.items()}
            continue
        result.skipped = skipped
        return result


def _find_bad(
    stage: StageSpec, branch: int, paths: list[str], broadcast: dict[int, list[str]]
) -> tuple[str, str] | None:
    """The first file of the task's (its own, then the broadcast input's) that does not read
    as its file source reads, with the reason; None if all do (or none is a file source's)."""
    for b, files in ((branch, paths), *broadcast.items()):
        source = stage.branches[b].source
        if isinstance(source, FileSource) and (bad := source.find_unreadable(files)):
            return bad.path, bad.reason
    return None


def _check_readable(paths: Sequence[str]) -> None:
    """Raise :class:`LostShuffle` for the files of ``paths`` that are gone or torn (their
    Arrow IPC footer does not read): their producing tasks must run again."""
    lost = missing(paths)
    for path in paths:
        if path not in lost:
            try:
                pl.read_ipc_schema(path)
            except Exception:
                lost.append(path)
    if lost:
        raise LostShuffle(lost)


def _scan(source: FileSource | StageInput, paths: list[str]) -> pl.LazyFrame:
    """``paths`` read as ``source`` reads its partitions: its format, cast to its schema (an
    earlier stage's results: as written)."""
    if isinstance(source, StageInput):
        return pl.scan_ipc(paths)
    if source.format == "parquet":
        lf = pl.scan_parquet(paths)
    elif source.format == "csv":
        lf = pl.scan_csv(paths)
    else:
        lf = pl.scan_ndjson(paths)
    schema = source.schema()
    assert schema is not None
    return lf.select(pl.col(n).cast(t) for n, t in schema.items())


def _steps(lf: pl.LazyFrame, steps: Sequence[StatelessNode]) -> pl.LazyFrame:
    for step in steps:
        if isinstance(step, FilterNode | WithColumnsNode | SelectNode):
            lf = apply_exprs(step, lf)
        else:  # map_batches / map: a function of the rows it is given, run on them all
            lf = apply_transform(step, lf.collect()).lazy()
    return lf


def _branch_rows(branch: Branch, paths: list[str]) -> pl.LazyFrame:
    """``paths`` of ``branch``'s input through its steps, only the columns it delivers."""
    lf = _steps(_scan(branch.source, paths), branch.steps)
    if branch.columns is not None:  # only what is read after it (pushed into the scan)
        lf = lf.select(branch.columns)
    return lf


def _map(
    job: JobSpec,
    task: MapTask,
    files: list[FileInput],
    attempt: int,
    context: Context,
    broadcast: dict[int, list[str]],
) -> TaskResult:
    branches = job.stages[task.stage].branches
    branch = branches[task.branch]
    bytes_read = sum(f.size for f in files)
    if not files:
        return TaskResult(bytes_read=0)
    lf = _branch_rows(branch, [f.path for f in files])
    stage = job.stages[task.stage].stage
    if isinstance(stage, JoinStage) and context.broadcast is not None:
        others = [
            (branches[b].side, _branch_rows(branches[b], p)) for b, p in broadcast.items() if p
        ]
        result = broadcast_join(stage, branch.side, lf, others)
        out = _steps(result.lazy(), job.post) if job.is_last(task.stage) else result.lazy()
        path = _attempt_path(job, task, attempt, context)
        rows = _write_output(out, path, _format(job, task))
        read = sum(map(file_size, (p for paths in broadcast.values() for p in paths)))
        return TaskResult(rows=rows, bytes_read=bytes_read + read)
    shuffle_dir = context.shuffle_dir(job.index, task.stage)
    if stage is None:  # a map-only last stage
        rows = _write_output(lf, _attempt_path(job, task, attempt, context), _format(job, task))
        return TaskResult(rows=rows, bytes_read=bytes_read)
    group: list[str]
    sample = None
    match stage:
        case SortStage():
            partials, sample = sorted_run(stage, lf, task.branch, files[0])
            rows = partials.height
            group = []  # one run per map task; every reduce task reads the part in its range
        case JoinStage():
            rows, partials = join_rows(stage, branch.side, lf)
            group = list(stage.side_keys(branch.side))
        case TopKStage():
            rows, partials = ordered_rows(stage, lf, task.branch, files[0])
            group = []  # one bucket: one reduce task merges every task's first k rows
        case DistinctStage():
            rows, partials = ordered_rows(stage, lf, task.branch, files[0])
            group = stage.subset
        case WindowStage() | AggStage():
            partials = _partials(stage, lf, files[0])
            rows = int(partials.get_column(_ROWS).sum())
            if isinstance(stage, WindowStage):
                nulls = int(partials.get_column(_NULLS).sum())
                if nulls:
                    raise ValueError(
                        f"{nulls} rows have a null event time in column {stage.ts_column!r}; "
                        "filter or fill them before the window"
                    )
                partials = partials.drop(_NULLS)
            partials = partials.drop(_ROWS)
            group = _group(stage)
        case _:
            assert_never(stage)
    buckets = 1 if isinstance(stage, SortStage) else context.buckets
    shuffle = write_buckets(partials, group, buckets, shuffle_dir, task.id, attempt)
    sizes = {b: os.path.getsize(path) for b, path in shuffle.items()}
    return TaskResult(
        rows=rows, bytes_read=bytes_read, shuffle=shuffle, shuffle_bytes=sizes, sample=sample
    )


def _format(job: JobSpec, task: MapTask | ReduceTask) -> str:
    """The format a task writes: the job's output's, or Arrow IPC for a stage's results."""
    return job.output.format if job.is_last(task.stage) else "ipc"


def _attempt_path(job: JobSpec, task: MapTask | ReduceTask, attempt: int, context: Context) -> Path:
    return context.committer(job, task.stage).attempt_path(task.id, attempt)


def _group(stage: WindowStage | AggStage) -> list[str]:
    """The columns a partial's group is: its keys, and its window's end."""
    if isinstance(stage, WindowStage):
        return [*stage.keys, "window_end"]
    return list(stage.keys)


def _partials(stage: WindowStage | AggStage, lf: pl.LazyFrame, first: FileInput) -> pl.DataFrame:
    """The task's rows pre-aggregated per group (:func:`_group`) by the aggregations' partial
    expressions, with :data:`PART`, the group's ``_ROWS`` and (windows) ``_NULLS``, its rows
    with a null event time."""
    acc = Accumulators(stage.aggs)
    exprs = acc.partial_exprs()
    counts = [pl.len().alias(_ROWS)]
    if isinstance(stage, WindowStage):
        ts = event_time_ms(stage.ts_column, stage.input_schema[stage.ts_column])
        # a null event time would drop out of hopping windows silently: count it, fill it, fail
        lf = lf.with_columns(ts.alias(TS)).with_columns(
            pl.col(TS).is_null().alias(_NULLS), pl.col(TS).fill_null(0)
        )
        counts.append(pl.col(_NULLS).sum())
    elif needs_positions(stage.aggs):  # as the single-process runner orders first/last
        lf = lf.with_columns(order_time(stage.ts_column, stage.input_schema).alias(TS))
    # (a keyed aggregation without first/last is a plain group-by: no columns added)
    if any(PART in e.meta.root_names() for e in exprs):  # quantile samples
        lf = lf.with_columns(pl.lit(first.partition, pl.Int64).alias(PART))
    if any(SEQ in e.meta.root_names() for e in exprs):  # first/last, quantile samples
        seq = pl.int_range(pl.len(), dtype=pl.Int64) + (first.file_index << SEQ_FILE_SHIFT)
        lf = lf.with_columns(seq.alias(SEQ))
    if isinstance(stage, WindowStage):
        lf = assign_windows_lazy(lf, stage.window, TS)
    if acc.needs_order:
        lf = lf.sort(TS, SEQ)
    partials = lf.group_by(_group(stage), maintain_order=acc.needs_order).agg(*exprs, *counts)
    frame = partials.collect(engine="in-memory" if acc.needs_order else "streaming")
    return frame.with_columns(pl.lit(first.partition, pl.Int64).alias(PART))


def _reduce(job: JobSpec, task: ReduceTask, attempt: int, context: Context) -> TaskResult:
    stage = job.stages[task.stage].stage
    assert stage is not None
    paths = [i.path for i in task.inputs]
    if isinstance(stage, SortStage):
        _check_readable(paths)  # runs are scanned lazily, not read whole
        low, high = task.bounds
        result = range_rows(stage, paths, low, high)
        return _finish(job, task, attempt, context, result, sum(map(file_size, paths)))
    lost = missing(paths)
    if lost:
        raise LostShuffle(lost)
    frames: list[pl.DataFrame] = []
    for i, path in enumerate(paths):
        try:
            frames.append(pl.read_ipc(path).with_columns(pl.lit(i).alias(_CHUNK)))
        except Exception as exc:  # gone, or torn: either way its map task must run again
            raise LostShuffle([path]) from exc
    bytes_read = sum(os.path.getsize(p) for p in paths if os.path.exists(p))
    match stage:
        case JoinStage():
            sides = [i.side for i in task.inputs]
            result = join_bucket(stage, [f.drop(_CHUNK) for f in frames], sides)
        case TopKStage() | DistinctStage():
            result = ordered_bucket(stage, [f.drop(_CHUNK) for f in frames])
        case AggStage() if _mergeable(stage):
            result = _merge_columnar(stage, frames)
        case WindowStage() | AggStage():
            result = _fold(stage, frames)
        case SortStage():
            raise AssertionError("a sort's reduce task reads its runs above")
        case _:
            assert_never(stage)
    return _finish(job, task, attempt, context, result, bytes_read)


def _finish(
    job: JobSpec,
    task: ReduceTask,
    attempt: int,
    context: Context,
    result: pl.DataFrame,
    bytes_read: int,
) -> TaskResult:
    """Write a reduce task's result: through the steps after the stage if it is the job's
    last (a later stage's map tasks run the steps between two stages)."""
    out = _steps(result.lazy(), job.post) if job.is_last(task.stage) else result.lazy()
    rows = _write_output(out, _attempt_path(job, task, attempt, context), _format(job, task))
    return TaskResult(rows=rows, bytes_read=bytes_read)


_COLUMNAR = (Count, Sum, Min, Max)
"""Aggregations whose partials merge by the same Polars aggregation (counts and sums add,
extremes take their extreme): a keyed aggregation of only these merges in one group-by."""


def _mergeable(stage: AggStage) -> bool:
    return all(type(a) in _COLUMNAR for a in stage.aggs)


def _merge_columnar(stage: AggStage, frames: list[pl.DataFrame]) -> pl.DataFrame:
    """:func:`_fold`'s result by one Polars group-by over the partials (no per-group Python:
    the fold's Decimal sums add Python objects): counts and sums add (a sum of no value is
    null, as the accumulators' ``result`` says), min/max take the extreme (NaN gives way to any
    number in both), sorted by key as the single-process runner sorts."""
    if not frames:
        return pl.DataFrame(schema=stage.out_schema)
    merged: list[pl.Expr] = []
    for i, a in enumerate(stage.aggs):
        column = partial_prefix(i)
        if isinstance(a, Count):
            merged.append(pl.col(column + "n").sum().alias(a.name))
        elif isinstance(a, Sum):
            total = pl.col(column + "s").sum()
            merged.append(pl.when(pl.col(column + "n").sum() > 0).then(total).alias(a.name))
        else:
            value = pl.col(column + "v")
            merged.append((value.min() if isinstance(a, Min) else value.max()).alias(a.name))
    partials = pl.concat(frames, how="vertical").lazy()
    keys = list(stage.keys)
    grouped = partials.group_by(keys).agg(merged) if keys else partials.select(merged)
    # integer sums are Int128 here: exact, or the SumOverflowError run_bounded raises
    out = stage.out_schema
    checks = [e for a in stage.aggs if (e := a.bounded_finish(out[a.name], keys)) is not None]
    if checks:
        grouped = grouped.with_columns(checks)
    result = grouped.with_columns(pl.lit(False).alias(IS_UPDATE)).select(
        pl.col(name).cast(dtype) for name, dtype in stage.out_schema.items()
    )
    return result.sort(keys, nulls_last=False).collect() if keys else result.collect()


def _fold(stage: WindowStage | AggStage, frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Every partial row merged into its group's state; the groups' results, sorted as the
    single-process runner sorts them."""
    acc = Accumulators(stage.aggs)
    state = WindowState.for_batches(
        stage.keys, stage.aggs, stage.input_schema, acc.partial_exprs(), stage.out_schema
    )
    if not frames:
        return pl.DataFrame(schema=stage.out_schema)
    window = stage.window if isinstance(stage, WindowStage) else None
    partials = pl.concat(frames, how="vertical")
    group = _group(stage)
    gid = (partials.select(pl.struct(group).rank("dense")).to_series().to_numpy() - 1).astype(
        np.int64
    )
    count = int(gid.max()) + 1 if gid.size else 0
    ids = state.allocate(count)
    assert (ids == np.arange(count)).all()  # a fresh state hands out 0..count-1
    held = np.zeros(count, bool)
    parts = state.read(partials)
    ends = (
        partials.get_column("window_end").to_numpy().astype(np.int64)
        if window is not None
        else np.zeros(partials.height, np.int64)
    )
    chunk = partials.get_column(_CHUNK).to_numpy()
    part = partials.get_column(PART).to_numpy()
    order = np.lexsort((part, chunk))  # stable: rows keep their order within a chunk
    keys = np.stack([chunk[order], part[order]], axis=1)
    cuts = np.flatnonzero((keys[1:] != keys[:-1]).any(axis=1)) + 1
    for pos in np.split(order, cuts):
        if pos.size == 0:
            continue
        rows = gid[pos]
        new = ~held[rows]
        partition = int(part[pos[0]])
        if new.any():
            state.put(rows[new], ends[pos[new]], partials, parts, pos[new], partition)
        if not new.all():
            state.merge(rows[~new], parts, pos[~new], partition)
        held[rows] = True
    every = np.arange(count, dtype=np.int64)
    if window is None:
        result = state.results(every, None, window_columns=False)
        return result.sort(list(stage.keys), nulls_last=False)
    result = state.results(every, window.size_ms)
    return result.sort(["window_end", "window_start", *stage.keys])


def _write_output(lf: pl.LazyFrame, path: Path, format: str) -> int:
    """Write ``lf`` to ``path`` (streaming where Polars can); returns its rows (nothing is
    written for none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "parquet":
        lf.sink_parquet(path)
        rows = int(pl.scan_parquet(path).select(pl.len()).collect().item())
    elif format == "ndjson":
        lf.sink_ndjson(path)
        with path.open("rb") as f:
            rows = sum(1 for line in f if line.strip())
    else:
        lf.sink_ipc(path)
        rows = int(pl.scan_ipc(path).select(pl.len()).collect().item())
    if rows == 0:
        path.unlink()
    return rows
