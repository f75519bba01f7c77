"""The local engine's results equal the single-process bounded runner's and DuckDB's."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from strom import FileSink, Hopping, MemorySink, Pipeline, Tumbling, agg, run_bounded
from strom.batch import run_local
from strom.batch.planner import lower
from strom.batch.tasks import pack
from strom.connectors import FileSource
from strom.connectors.files import FileFormat
from strom.pipeline import PlanError
from strom.pipeline.windows import Session

ORDER = ["window_end", "k"]
TEN_SECONDS = Tumbling(10_000)
AGGS = (
    agg.count(),
    agg.count("v"),
    agg.sum("v"),
    agg.mean("v"),
    agg.min("v"),
    agg.max("v"),
    agg.first("v"),
    agg.last("v"),
    agg.std("v"),
    agg.count_distinct("cat"),
    agg.approx_count_distinct("v"),
    agg.approx_quantile("v", 0.5),  # exact below 2,048 values a window: the same as a runner's
)


def windowed(
    sink: MemorySink | FileSink,
    glob: str,
    fmt: FileFormat = "parquet",
    window: Tumbling | Hopping = TEN_SECONDS,
    partitions: int = 3,
) -> Pipeline:
    p = Pipeline()
    stream = p.source(FileSource(glob, fmt, partitions=partitions), timestamp="ts")
    (
        stream.filter(pl.col("k") != 3)
        .with_columns((pl.col("v") * 2).alias("v2"))
        .key_by("k")
        .window(window)
        .agg(*AGGS, agg.sum("v2"))
        .filter(pl.col("count") > 0)
        .sink(sink)
    )
    return p


def both(build: object, **local: object) -> tuple[pl.DataFrame, pl.DataFrame]:
    single, parallel = MemorySink(), MemorySink()
    run_bounded(build(single))  # type: ignore[operator]
    run_local(build(parallel), workers=2, memory="2GiB", **local)  # type: ignore[operator, arg-type]
    return single.to_frame().sort(ORDER), parallel.to_frame().sort(ORDER)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
def test_tumbling_equals_the_single_process_runner(events, fmt: FileFormat) -> None:
    directory = events(format=fmt)
    single, parallel = both(lambda s: windowed(s, str(directory / f"*.{fmt}"), fmt))
    assert parallel.height > 100
    # first/last with tied event times break ties the same way; sums in the last bits only
    assert_frame_equal(single, parallel, check_exact=False, rel_tol=1e-12)
    exact = [c for c in single.columns if c not in ("sum_v", "mean_v", "std_v", "sum_v2")]
    assert single.select(exact).equals(parallel.select(exact))


def test_hopping_equals_the_single_process_runner(events) -> None:
    directory = events(files=6)
    build = lambda s: windowed(  # noqa: E731
        s, str(directory / "*.parquet"), window=Hopping(30_000, 10_000), partitions=2
    )
    single, parallel = both(build)
    assert_frame_equal(single, parallel, check_exact=False, rel_tol=1e-12)


def test_union_of_two_sources(events) -> None:
    a, b = events("a", files=4, seed=1), events("b", files=5, seed=2)

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        left = p.source(FileSource(str(a / "*.parquet"), "parquet", partitions=2), timestamp="ts")
        right = p.source(FileSource(str(b / "*.parquet"), "parquet"), timestamp="ts")
        left.union(right).key_by("k").window(Tumbling(20_000)).agg(
            agg.count(), agg.first("v"), agg.last("cat")
        ).sink(sink)
        return p

    single, parallel = both(build)
    assert single.equals(parallel)


def test_equals_duckdb(events) -> None:
    directory = events(files=8)
    sink = MemorySink()
    p = Pipeline()
    stream = p.source(FileSource(str(directory / "*.parquet"), "parquet"), timestamp="ts")
    stream.key_by("k").window(Tumbling(10_000)).agg(
        agg.count(), agg.sum("v"), agg.min("v"), agg.max("v"), agg.mean("v")
    ).sink(sink)
    run_local(p, workers=2, memory="2GiB")
    ours = sink.to_frame().drop("is_update").sort(ORDER)
    sql = f"""
        select k, ts - ts % 10000 as window_start, ts - ts % 10000 + 10000 as window_end,
               count(*) as count, sum(v) as sum_v, min(v) as min_v, max(v) as max_v,
               avg(v) as mean_v
        from read_parquet('{directory}/*.parquet') group by all order by window_end, k
    """
    theirs = pl.from_arrow(duckdb.sql(sql).arrow())
    assert isinstance(theirs, pl.DataFrame)
    assert_frame_equal(ours, theirs, check_dtypes=False, check_exact=False, rel_tol=1e-9)


def test_file_sink_commits_per_job_and_a_rerun_is_idempotent(events, tmp_path: Path) -> None:
    directory = events(files=10)
    out = tmp_path / "out"
    build = lambda: windowed(FileSink(out, "parquet"), str(directory / "*.parquet"))  # noqa: E731
    run_local(build(), workers=2, memory="2GiB")
    first = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert "_SUCCESS" in first and not (out / "_temporary").exists()
    run_local(build(), workers=2, memory="2GiB")
    again = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert again == first
    single = MemorySink()
    run_bounded(windowed(single, str(directory / "*.parquet")))
    result = pl.read_parquet(out / "part-*.parquet").sort(ORDER)
    assert_frame_equal(result, single.to_frame().sort(ORDER), check_exact=False)


def test_map_only_pipeline_into_ndjson_files(events, tmp_path: Path) -> None:
    directory = events(files=9, rows=500)
    out = tmp_path / "out"
    p = Pipeline()
    stream = p.source(FileSource(str(directory / "*.parquet"), "parquet"), timestamp="ts")
    stream.filter(pl.col("cat") == "a").select("ts", "k", (pl.col("v") + 1).alias("w")).sink(
        FileSink(out, "ndjson")
    )
    report = run_local(p, workers=2, memory=2 * 1024**3)
    assert (out / "_SUCCESS").exists()
    got = pl.read_ndjson(list(out.glob("part-*.ndjson"))).sort("ts", "k", "w")
    expected = (
        pl.read_parquet(directory / "*.parquet")
        .filter(pl.col("cat") == "a")
        .select("ts", "k", (pl.col("v") + 1).alias("w"))
        .sort("ts", "k", "w")
    )
    assert got.equals(expected)
    assert report.rows_out == [expected.height]


def test_many_tiny_files_make_few_tasks(tmp_path: Path) -> None:
    directory = tmp_path / "tiny"
    directory.mkdir()
    for i in range(20_000):
        (directory / f"e{i:05d}.csv").write_text(f"ts,k,v\n{i},{i % 7},{i * 0.5}\n")
    p = Pipeline()
    sink = MemorySink()
    stream = p.source(FileSource(str(directory / "*.csv"), "csv"), timestamp="ts")
    stream.key_by("k").window(Tumbling(1_000_000)).agg(agg.count(), agg.sum("v")).sink(sink)
    (job,) = lower(p.plan())
    tasks = pack(0, job.spec.stages[0].branches, 128 * 1024**2)
    assert len(tasks) == 1  # ~0.4 MB of files: one task, not 20,000
    assert sum(len(t.files) for t in tasks) == 20_000
    assert len(pack(0, job.spec.stages[0].branches, 64 * 1024)) < 20


def test_unsupported_nodes_are_plan_errors(events) -> None:
    directory = events(files=1)
    p = Pipeline()
    stream = p.source(FileSource(str(directory / "*.parquet"), "parquet"), timestamp="ts")
    stream.key_by("k").window(Session(1_000)).agg(agg.count()).sink(MemorySink())
    with pytest.raises(PlanError, match="session windows"):
        run_local(p, workers=1, memory="1GiB")
    from strom import MemorySource

    q = Pipeline()
    q.source(MemorySource([[{"ts": 1, "k": 1}]]), timestamp="ts").sink(MemorySink())
    with pytest.raises(PlanError, match="reads FileSource"):
        run_local(q, workers=1, memory="1GiB")


@pytest.mark.parametrize("partitions", [1, 2])
def test_first_and_last_break_ties_across_tasks_as_the_single_process_runner(
    events, partitions: int
) -> None:
    # ~14 MB in 24 files: a partition's files are cut into several tasks, and event times tie
    directory = events(files=24, rows=40_000, keys=5)

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        source = FileSource(str(directory / "*.parquet"), "parquet", partitions=partitions)
        p.source(source, timestamp="ts").key_by("k").window(Tumbling(20_000)).agg(
            agg.first("v"), agg.last("v"), agg.first("cat", name="first_cat"), agg.count()
        ).sink(sink)
        return p

    (job,) = lower(build(MemorySink()).plan())
    assert len(pack(0, job.spec.stages[0].branches, 2 * 1024**2)) >= 2 * partitions
    single, parallel = both(build)
    assert single.equals(parallel)


def test_a_global_window_into_sqlite(events, tmp_path: Path) -> None:
    import sqlite3

    from strom import SQLiteSink

    directory = events(files=5)
    database = tmp_path / "out.db"

    def build(sink: MemorySink | SQLiteSink) -> Pipeline:
        p = Pipeline()
        stream = p.source(FileSource(str(directory / "*.parquet"), "parquet"), timestamp="ts")
        stream.window(Tumbling(50_000)).agg(agg.count(), agg.max("v")).sink(sink)
        return p

    run_local(build(SQLiteSink(database, "windows")), workers=2, memory="2GiB")
    single = MemorySink()
    run_bounded(build(single))
    with sqlite3.connect(database) as db:
        rows = db.execute("select window_start, count, max_v from windows").fetchall()
    expected = single.to_frame().select("window_start", "count", "max_v").rows()
    assert sorted(rows) == sorted(expected)
