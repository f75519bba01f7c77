"""Task retry from lineage: an exception, a SIGKILLed worker and a lost shuffle file give the
result of a clean run; attempts exhausted and bad files fail naming the task or the file."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import polars as pl
import pytest
from local_engine_data import write_events
from polars.testing import assert_frame_equal

from strom import MemorySink, Pipeline, Tumbling, agg, run_bounded
from strom.batch import BadFileError, Progress, TaskFailed, run_local
from strom.connectors import FileSource

ORDER = ["window_end", "k"]
SCHEMA = pl.Schema({"ts": pl.Int64, "k": pl.Int64, "v": pl.Float64, "cat": pl.String})


class Fault:
    """A ``map_batches`` step that passes rows through, but in its first ``times`` calls (over
    all worker processes: counted by marker files) raises or SIGKILLs its own process."""

    def __init__(self, markers: Path, kind: str, times: int = 1) -> None:
        self.markers = markers
        self.kind = kind
        self.times = times

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        for i in range(self.times):
            try:
                os.close(os.open(self.markers / f"fault-{i}", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            if self.kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure")
        return frame


def build(sink: MemorySink, glob: str, fault: Fault | None = None) -> Pipeline:
    p = Pipeline()
    stream = p.source(FileSource(glob, "parquet", partitions=2), timestamp="ts")
    if fault is not None:
        stream = stream.map_batches(fault, schema=SCHEMA)
    stream.key_by("k").window(Tumbling(10_000)).agg(
        agg.count(), agg.sum("v"), agg.first("v"), agg.last("cat")
    ).sink(sink)
    return p


def expected(glob: str) -> pl.DataFrame:
    """A clean local run's result, checked against the single-process runner's (float sums
    differ from it in the last bits: the addition order differs)."""
    clean, _ = local(glob)
    sink = MemorySink()
    run_bounded(build(sink, glob))
    assert_frame_equal(clean, sink.to_frame().sort(ORDER), check_exact=False, rel_tol=1e-12)
    return clean


def local(glob: str, fault: Fault | None = None, **kw: object) -> tuple[pl.DataFrame, object]:
    sink = MemorySink()
    report = run_local(build(sink, glob, fault), workers=2, memory="2GiB", **kw)  # type: ignore[arg-type]
    return sink.to_frame().sort(ORDER), report


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pl.DataFrame]:
    """Eight files, and a clean run's result over them (shared by the fault tests)."""
    glob = str(write_events(tmp_path_factory.mktemp("faults") / "events", files=8) / "*.parquet")
    return glob, expected(glob)


@pytest.mark.parametrize("kind", ["raise", "kill"])
def test_a_failed_task_is_recomputed(clean, tmp_path: Path, kind: str) -> None:
    glob, want = clean
    markers = tmp_path / "markers"
    markers.mkdir()
    result, report = local(glob, Fault(markers, kind, times=2))
    assert report.retries == 2  # type: ignore[attr-defined]
    assert result.equals(want)


class KillIdleSibling:
    """A ``map_batches`` step that, once (a marker file), SIGKILLs every other worker process
    of its driver, which are idle while the run's only task runs, and waits for them to die."""

    def __init__(self, markers: Path) -> None:
        self.markers = markers

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        from strom.batch.memory import children

        try:
            os.close(os.open(self.markers / "killed", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return frame
        siblings = [p for p in children(os.getppid()) if p != os.getpid()]
        for pid in siblings:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:  # it ended meanwhile
                continue
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                os.kill(pid, signal.SIGKILL)
                (self.markers / f"victim-{pid}").touch()
        time.sleep(0.5)  # the driver sees the deaths while this task still runs
        return frame


def test_a_worker_that_dies_idle_is_replaced_and_the_run_goes_on(tmp_path: Path) -> None:
    """A worker killed while it has no task (here by the task running on its sibling) costs no
    retry: the driver starts another and the run's result is the clean one."""
    glob = str(write_events(tmp_path / "events", files=1) / "*.parquet")
    want = expected(glob)
    markers = tmp_path / "markers"
    markers.mkdir()
    sink = MemorySink()
    p = Pipeline()
    stream = p.source(FileSource(glob, "parquet"), timestamp="ts")
    stream = stream.map_batches(KillIdleSibling(markers), schema=SCHEMA)
    stream.key_by("k").window(Tumbling(10_000)).agg(
        agg.count(), agg.sum("v"), agg.first("v"), agg.last("cat")
    ).sink(sink)
    report = run_local(p, workers=2, memory="2GiB")
    assert len(list(markers.glob("victim-*"))) == 1  # the idle sibling was killed
    assert report.retries == 0
    assert sink.to_frame().sort(ORDER).equals(want)


class LoseShuffleFile(Progress):
    """Deletes (or tears) one shuffle file when the map stage is done, before any reduce task
    reads it."""

    def __init__(self, work_dir: Path, how: str) -> None:
        super().__init__()
        self.work_dir = work_dir
        self.how = how
        self.deleted: list[Path] = []

    def stage_done(self, stage: str) -> None:
        super().stage_done(stage)
        if stage.endswith(" map"):
            victim = sorted(self.work_dir.glob("job-*/stage-0/shuffle/*.arrow"))[0]
            if self.how == "delete":
                victim.unlink()
            else:
                victim.write_bytes(victim.read_bytes()[:100])
            self.deleted.append(victim)


@pytest.mark.parametrize("how", ["delete", "tear"])
def test_a_lost_shuffle_file_is_recomputed_from_its_map_task(
    clean, tmp_path: Path, how: str
) -> None:
    glob, want = clean
    work = tmp_path / "work"
    progress = LoseShuffleFile(work, how)
    result, report = local(glob, progress=progress, work_dir=work)
    assert len(progress.deleted) == 1
    assert report.retries == 1  # type: ignore[attr-defined]  # the map task, once
    assert progress.stages["job 0 map"].retries == 0
    assert result.equals(want)


def test_attempts_exhausted_name_the_task_and_its_files(events, tmp_path: Path) -> None:
    directory = events(files=3)
    markers = tmp_path / "markers"
    markers.mkdir()
    with pytest.raises(TaskFailed) as failure:
        local(str(directory / "*.parquet"), Fault(markers, "raise", times=100), max_task_attempts=3)
    message = str(failure.value)
    assert "failed 3 time(s)" in message and "RuntimeError: injected failure" in message
    assert "task j0-map-0000" in message and str(directory / "part-0000") in message


def corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn write: no footer


def test_a_bad_file_fails_the_run_naming_it(events) -> None:
    directory = events(files=6)
    bad = directory / "part-00004.parquet"
    corrupt(bad)
    with pytest.raises(BadFileError) as failure:
        local(str(directory / "*.parquet"))
    assert str(bad) in str(failure.value)
    assert "task j0-map-" in str(failure.value)


def test_skipped_bad_files_are_reported_and_the_rest_is_the_result(events, tmp_path: Path) -> None:
    directory = events(files=6)
    bad = directory / "part-00003.parquet"
    corrupt(bad)
    work = tmp_path / "work"
    result, report = local(str(directory / "*.parquet"), on_bad_file="skip", work_dir=work)
    assert [b["file"] for b in report.bad_files] == [str(bad)]  # type: ignore[attr-defined]
    assert (work / "bad_files.ndjson").read_text().count("\n") == 1
    good = tmp_path / "good"
    good.mkdir()
    for f in directory.glob("*.parquet"):
        if f != bad:
            shutil.copy(f, good / f.name)
    # partitions=2 deals the files round-robin: without the bad file the good ones are dealt
    # differently, so compare the order-free aggregations over the good files alone (sums
    # added in another order: up to the last bits)
    order_free = ["k", "window_start", "window_end", "count", "sum_v"]
    want = expected(str(good / "*.parquet")).select(order_free)
    assert_frame_equal(result.select(order_free), want, check_exact=False, rel_tol=1e-12)


# -- keyed aggregations, joins, top-k, distinct: their map and reduce tasks retry alike --


def relational(
    kind: str, sink: MemorySink, glob: str, fault: Fault | None = None, where: str = "map"
) -> Pipeline:
    """A keyed aggregation (``kind="agg"``), a left join (``"join"``), a top-k (``"topk"``) or a
    distinct (``"distinct"``) of ``glob``'s events, with ``fault`` in a map task (a step before
    the stage) or a reduce task (a step after)."""
    p = Pipeline()
    stream = p.source(FileSource(glob, "parquet", partitions=2), timestamp="ts")
    if fault is not None and where == "map":
        stream = stream.map_batches(fault, schema=SCHEMA)
    if kind == "agg":
        out = stream.key_by("k").agg(agg.count(), agg.sum("v"), agg.first("v"), agg.last("cat"))
    elif kind == "topk":
        out = stream.top_k(500, by=["cat", "k"])
    elif kind == "distinct":
        out = stream.distinct("k", "cat")
    else:
        right = p.source(FileSource(glob, "parquet"), name="right")
        right = right.filter(pl.col("ts") < 3_000).select("k", pl.col("v").alias("w"))
        out = stream.join(right, on="k", how="left")
    if fault is not None and where == "reduce":
        out = out.map_batches(fault)
    out.sink(sink)
    return p


def relational_run(kind: str, glob: str, **kw: object) -> tuple[pl.DataFrame, object]:
    sink = MemorySink()
    fault = kw.pop("fault", None)
    where = kw.pop("where", "map")
    pipeline = relational(kind, sink, glob, fault, where)  # type: ignore[arg-type]
    kw.setdefault("broadcast", 0)  # the shuffled join (test_local_broadcast: the broadcast one)
    report = run_local(pipeline, workers=2, memory="2GiB", **kw)  # type: ignore[arg-type]
    frame = sink.to_frame()
    return frame.sort(frame.columns, nulls_last=True), report


@pytest.fixture(scope="module")
def clean_relational(clean: tuple[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Each kind's clean local result, checked against the single-process runner's."""
    glob, _ = clean
    results: dict[str, pl.DataFrame] = {}
    for kind in ("agg", "join", "topk", "distinct"):
        result, _ = relational_run(kind, glob)
        sink = MemorySink()
        run_bounded(relational(kind, sink, glob))
        single = sink.to_frame()
        single = single.sort(single.columns, nulls_last=True)
        assert_frame_equal(result, single, check_exact=False, rel_tol=1e-12)
        results[kind] = result
    return results


@pytest.mark.parametrize(
    ("kind", "where", "how"),
    [
        ("agg", "map", "kill"),
        ("agg", "reduce", "raise"),
        ("join", "map", "raise"),
        ("join", "reduce", "kill"),
        ("topk", "reduce", "kill"),
        ("distinct", "map", "raise"),
    ],
)
def test_relational_tasks_are_recomputed(
    clean, clean_relational, tmp_path: Path, kind: str, where: str, how: str
) -> None:
    glob, _ = clean
    markers = tmp_path / "markers"
    markers.mkdir()
    progress = Progress()
    result, report = relational_run(
        kind, glob, fault=Fault(markers, how), where=where, progress=progress
    )
    assert report.retries == 1  # type: ignore[attr-defined]
    assert progress.stages[f"job 0 {where}"].retries == 1
    assert result.equals(clean_relational[kind])


@pytest.mark.parametrize("kind", ["agg", "join", "topk", "distinct"])
def test_relational_tasks_recompute_a_lost_shuffle_file(
    clean, clean_relational, tmp_path: Path, kind: str
) -> None:
    glob, _ = clean
    work = tmp_path / "work"
    progress = LoseShuffleFile(work, "delete")
    result, report = relational_run(kind, glob, progress=progress, work_dir=work)
    assert len(progress.deleted) == 1
    assert report.retries == 1  # type: ignore[attr-defined]
    assert result.equals(clean_relational[kind])


# -- multi-stage plans: a later stage's task, and an earlier stage's lost result --


def staged(sink: MemorySink, glob: str, fault: Fault | None = None) -> Pipeline:
    """A join feeding an aggregation feeding a sort, ``fault`` in the second stage's map tasks
    (a step between the join and the aggregation)."""
    p = Pipeline()
    left = p.source(FileSource(glob, "parquet", partitions=2), timestamp="ts")
    right = p.source(FileSource(glob, "parquet"), name="right")
    right = right.filter(pl.col("ts") < 3_000).select("k", pl.col("v").alias("w"))
    joined = left.join(right, on="k")
    if fault is not None:
        joined = joined.map_batches(fault, schema=pl.Schema({**SCHEMA, "w": pl.Float64}))
    joined.key_by("k", "cat").agg(agg.count(), agg.max("w")).sort(["count", "k"]).sink(sink)
    return p


def staged_run(glob: str, **kw: object) -> tuple[pl.DataFrame, object]:
    sink = MemorySink()
    fault = kw.pop("fault", None)
    report = run_local(staged(sink, glob, fault), workers=2, memory="2GiB", **kw)  # type: ignore[arg-type]
    return sink.to_frame(), report


@pytest.fixture(scope="module")
def clean_staged(clean: tuple[str, pl.DataFrame]) -> pl.DataFrame:
    glob, _ = clean
    result, _ = staged_run(glob)
    single = MemorySink()
    run_bounded(staged(single, glob))
    assert result.height > 50
    assert result.equals(single.to_frame())
    return result


def test_a_worker_killed_in_a_later_stage_is_recomputed(
    clean, clean_staged, tmp_path: Path
) -> None:
    glob, _ = clean
    markers = tmp_path / "markers"
    markers.mkdir()
    progress = Progress()
    result, report = staged_run(glob, fault=Fault(markers, "kill"), progress=progress)
    assert report.retries == 1  # type: ignore[attr-defined]
    assert progress.stages["job 0 stage 1 map"].retries == 1
    assert result.equals(clean_staged)


class LoseStageOutput(Progress):
    """Deletes one of the first stage's result files as the second stage starts."""

    def __init__(self, work_dir: Path) -> None:
        super().__init__()
        self.work_dir = work_dir
        self.deleted: list[Path] = []

    def stage_started(self, stage: str, tasks: int, bytes_total: int) -> None:
        super().stage_started(stage, tasks, bytes_total)
        if stage == "job 0 stage 1 map":
            victim = sorted(self.work_dir.glob("job-0/stage-0/output/_temporary/*.arrow"))[0]
            victim.unlink()
            self.deleted.append(victim)


def test_a_lost_stage_result_is_recomputed_by_the_task_that_wrote_it(
    clean, clean_staged, tmp_path: Path
) -> None:
    glob, _ = clean
    work = tmp_path / "work"
    progress = LoseStageOutput(work)
    result, report = staged_run(glob, progress=progress, work_dir=work)
    assert len(progress.deleted) == 1
    assert report.retries == 1  # type: ignore[attr-defined]  # the first stage's reduce task
    assert result.equals(clean_staged)
