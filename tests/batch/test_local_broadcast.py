"""Broadcast joins: the small input read whole by every task of the other gives the shuffled
join's rows (and the single-process runner's, and DuckDB's); a task that reads it and is killed,
or finds an earlier stage's result it reads lost, is recomputed; the threshold decides."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from local_engine_data import write_events
from test_local_faults import Fault, LoseStageOutput, corrupt

from strom import MemorySink, Pipeline, agg, run_bounded
from strom.batch import BadFileError, Progress, run_local
from strom.batch.broadcast import BROADCAST_BYTES, choose, limit
from strom.batch.memory import MIB, PROCESS_BASE, Budget
from strom.connectors import FileSource

W = pl.Schema({"k": pl.Int64, "w": pl.Float64})


def joined(glob: str, how: str, sink: MemorySink, fault: Fault | None = None) -> Pipeline:
    """Events joined with a small right input (a few rows per key), ``fault`` in the right
    input's steps (run by every task when it is broadcast)."""
    p = Pipeline()
    left = p.source(FileSource(glob, "parquet", partitions=2), timestamp="ts")
    right = p.source(FileSource(glob, "parquet"), name="right")
    right = right.filter((pl.col("ts") < 3_000) & (pl.col("k") % 3 == 0))
    right = right.select("k", pl.col("v").alias("w"))
    if fault is not None:
        right = right.map_batches(fault, schema=W)
    left.join(right, on="k", how=how).sink(sink)  # type: ignore[arg-type]
    return p


def rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


@pytest.fixture(scope="module")
def glob(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_events(tmp_path_factory.mktemp("events"), files=6) / "*.parquet")


@pytest.mark.parametrize("how", ["inner", "left", "semi", "anti"])
def test_a_broadcast_join_equals_the_shuffled_one_and_duckdb(glob: str, how: str) -> None:
    results = []
    for broadcast in (BROADCAST_BYTES, 0):
        sink = MemorySink()
        report = run_local(joined(glob, how, sink), workers=2, memory="2GiB", broadcast=broadcast)
        assert report.tasks > 0
        results.append(rows(sink.to_frame()))
    broadcast_rows, shuffled = results
    assert broadcast_rows.height > 0
    assert broadcast_rows.equals(shuffled)
    single = MemorySink()
    run_bounded(joined(glob, how, single))
    assert broadcast_rows.equals(rows(single.to_frame()))
    right = f"(select k, v as w from read_parquet('{glob}') where ts < 3000 and k % 3 = 0)"
    if how in ("semi", "anti"):
        sql = f"select l.* from read_parquet('{glob}') l {how} join {right} r on l.k = r.k"
    else:
        sql = f"select l.*, r.w from read_parquet('{glob}') l {how} join {right} r on l.k = r.k"
    relation = duckdb.sql(sql)
    assert relation is not None
    theirs = rows(pl.DataFrame(relation.arrow()))
    assert broadcast_rows.select(theirs.columns).equals(theirs)


def test_a_broadcast_join_runs_no_reduce_tasks(glob: str) -> None:
    progress = Progress()
    run_local(joined(glob, "left", MemorySink()), workers=2, memory="2GiB", progress=progress)
    assert list(progress.stages) == ["job 0 map"]
    shuffled = Progress()
    run_local(
        joined(glob, "left", MemorySink()), workers=2, memory="2GiB", progress=shuffled, broadcast=0
    )
    assert list(shuffled.stages) == ["job 0 map", "job 0 reduce"]


def test_a_task_killed_reading_the_broadcast_input_is_recomputed(glob: str, tmp_path: Path) -> None:
    clean = MemorySink()
    run_local(joined(glob, "inner", clean), workers=2, memory="2GiB")
    markers = tmp_path / "markers"
    markers.mkdir()
    sink = MemorySink()
    fault = Fault(markers, "kill")
    report = run_local(joined(glob, "inner", sink, fault), workers=2, memory="2GiB")
    assert report.retries == 1
    assert rows(sink.to_frame()).equals(rows(clean.to_frame()))


def staged(glob: str, sink: MemorySink) -> Pipeline:
    """An aggregation (stage 0, a few rows) broadcast into a join with the events (stage 1)."""
    p = Pipeline()
    events = p.source(FileSource(glob, "parquet", partitions=2), timestamp="ts")
    counts = p.source(FileSource(glob, "parquet"), name="counts").key_by("k").agg(agg.count())
    events.join(counts.select("k", "count"), on="k").sink(sink)
    return p


def test_a_lost_broadcast_result_is_recomputed_by_its_writer(glob: str, tmp_path: Path) -> None:
    single = MemorySink()
    run_bounded(staged(glob, single))
    work = tmp_path / "work"
    progress = LoseStageOutput(work)
    sink = MemorySink()
    report = run_local(
        staged(glob, sink), workers=2, memory="2GiB", progress=progress, work_dir=work
    )
    assert len(progress.deleted) == 1
    assert report.retries == 1  # the first stage's reduce task that wrote it
    assert list(progress.stages) == ["job 0 map", "job 0 reduce", "job 0 stage 1 map"]
    assert rows(sink.to_frame()).equals(rows(single.to_frame()))


def test_the_threshold_decides_which_side_is_broadcast() -> None:
    small, large = MIB, 100 * MIB
    assert choose("left", large, small, 16 * MIB) == 1
    assert choose("left", small, large, 16 * MIB) is None  # a left row is in one task only
    assert choose("semi", small, large, 16 * MIB) is None
    assert choose("inner", small, large, 16 * MIB) == 0
    assert choose("inner", small, 2 * small, 16 * MIB) == 0  # the smaller of two small ones
    assert choose("anti", large, large, 16 * MIB) is None
    for how in ("left", "semi", "anti"):  # only the right input, even when both are small
        assert choose(how, large, small, 16 * MIB) == 1
        assert choose(how, small, 2 * small, 16 * MIB) == 1
        assert choose(how, small, large, 16 * MIB) is None
    assert choose("inner", 2 * small, small, 16 * MIB) == 1
    assert choose("inner", small, small, 16 * MIB) == 1  # a tie: the right one
    assert choose("inner", large, large, 16 * MIB) is None
    assert choose("left", large, 16 * MIB, 16 * MIB) == 1  # at most: inclusive
    assert choose("left", large, 16 * MIB + 1, 16 * MIB) is None
    assert choose("inner", 0, 0, 0) is None  # 0: never
    budget = Budget.plan(256 * MIB, 1)
    assert limit(budget) == (budget.per_worker - PROCESS_BASE) // 16 < BROADCAST_BYTES
    assert limit(Budget.plan(64 * 1024 * MIB, 2)) == BROADCAST_BYTES  # the default caps it
    assert limit(budget, 0) == 0


def nullable(left_glob: str, right_glob: str, how: str, sink: MemorySink) -> Pipeline:
    """Both inputs with null keys (every fifth key), the right one with several rows per key."""
    p = Pipeline()
    null_k = pl.when(pl.col("k") % 5 == 0).then(None).otherwise(pl.col("k")).alias("k")
    left = p.source(FileSource(left_glob, "parquet", partitions=2), timestamp="ts")
    left = left.select("ts", null_k, "v", "cat")
    right = p.source(FileSource(right_glob, "parquet"), name="right")
    right = right.filter(pl.col("ts") < 20_000).select(null_k, pl.col("v").alias("w"))
    left.join(right, on="k", how=how).sink(sink)  # type: ignore[arg-type]
    return p


@pytest.mark.parametrize("how", ["inner", "left", "semi", "anti"])
def test_null_keys_and_duplicate_broadcast_keys_join_as_when_shuffled(
    glob: str, tmp_path: Path, how: str
) -> None:
    right_glob = str(write_events(tmp_path / "right", files=3, rows=400, seed=11) / "*.parquet")
    right = pl.read_parquet(right_glob).filter(pl.col("ts") < 20_000)
    assert right["k"].is_duplicated().any() and (right["k"] % 5 == 0).any()
    results = []
    for broadcast in (BROADCAST_BYTES, 0):
        sink = MemorySink()
        progress = Progress()
        run_local(
            nullable(glob, right_glob, how, sink),
            workers=2,
            memory="2GiB",
            broadcast=broadcast,
            progress=progress,
        )
        assert ("job 0 reduce" in progress.stages) == (broadcast == 0)
        results.append(rows(sink.to_frame()))
    broadcast_rows, shuffled = results
    assert broadcast_rows.height > 0
    assert broadcast_rows.equals(shuffled)
    nulls = broadcast_rows["k"].null_count()
    # a null key matches nothing: kept unmatched by left and anti joins, dropped by the others
    assert (nulls > 0) == (how in ("left", "anti"))
    single = MemorySink()
    run_bounded(nullable(glob, right_glob, how, single))
    assert broadcast_rows.equals(rows(single.to_frame()))


def small_right(glob: str, right_glob: str, sink: MemorySink) -> Pipeline:
    p = Pipeline()
    left = p.source(FileSource(glob, "parquet", partitions=2), timestamp="ts")
    right = p.source(FileSource(right_glob, "parquet"), name="right")
    right = right.select("k", pl.col("v").alias("w"))
    left.join(right, on="k", how="left").sink(sink)
    return p


def test_a_bad_file_of_the_broadcast_input_fails_or_is_skipped(glob: str, tmp_path: Path) -> None:
    directory = write_events(tmp_path / "right", files=3, rows=50, seed=3)
    right_glob = str(directory / "*.parquet")
    good = tmp_path / "good"
    good.mkdir()
    for f in sorted(directory.glob("*.parquet"))[:2]:
        (good / f.name).write_bytes(f.read_bytes())
    bad = directory / "part-00002.parquet"
    corrupt(bad)
    with pytest.raises(BadFileError) as failure:
        run_local(small_right(glob, right_glob, MemorySink()), workers=2, memory="2GiB")
    assert str(bad) in str(failure.value)
    work = tmp_path / "work"
    sink = MemorySink()
    progress = Progress()
    report = run_local(
        small_right(glob, right_glob, sink),
        workers=2,
        memory="2GiB",
        on_bad_file="skip",
        work_dir=work,
        progress=progress,
    )
    assert list(progress.stages) == ["job 0 map"]  # broadcast, not shuffled
    # every task skips it; it is reported once
    assert [b["file"] for b in report.bad_files] == [str(bad)]
    assert (work / "bad_files.ndjson").read_text().count("\n") == 1
    want = MemorySink()
    run_local(small_right(glob, str(good / "*.parquet"), want), workers=2, memory="2GiB")
    assert rows(sink.to_frame()).equals(rows(want.to_frame()))
    shuffled = MemorySink()
    run_local(
        small_right(glob, right_glob, shuffled),
        workers=2,
        memory="2GiB",
        on_bad_file="skip",
        broadcast=0,
    )
    assert rows(sink.to_frame()).equals(rows(shuffled.to_frame()))
