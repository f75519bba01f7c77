"""Every plan node on Spark, against the bounded runner over the same inputs; the nodes the
backend refuses fail before any job runs, naming the node."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from strom import (
    FileSink,
    FileSource,
    MemorySink,
    MemorySource,
    Pipeline,
    PlanError,
    ProcessFunction,
    SQLiteTable,
    Tumbling,
    agg,
    run_bounded,
)
from strom.pipeline.process import ProcessContext

LEFT = pl.DataFrame(
    {
        "ts": [1_000, 2_000, 2_000, 5_500, 9_000, 12_000],
        "k": ["a", "b", "a", None, "b", "c"],
        "v": [1, 2, 3, 4, None, 6],
    }
)
RIGHT = pl.DataFrame(
    {"ts": [1_500, 2_500, 8_000, 11_000], "k": ["a", "b", "b", "c"], "r": [10, 20, 30, 40]}
)


def _build(tmp: Path, sinks: dict[str, MemorySink]) -> Pipeline:
    db = tmp / "table.db"
    if not db.exists():
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE info (k TEXT PRIMARY KEY, site TEXT, level INTEGER)")
            con.executemany("INSERT INTO info VALUES (?, ?, ?)", [("a", "x", 1), ("b", "y", 2)])
        LEFT.write_parquet(tmp / "left-0.parquet")
        RIGHT.write_csv(tmp / "right-0.csv")
    p = Pipeline()
    left = p.source(FileSource(str(tmp / "left-*.parquet"), "parquet"), timestamp="ts")
    right = p.source(FileSource(str(tmp / "right-*.csv"), "csv"), timestamp="ts")
    memory = p.source(MemorySource([[LEFT.head(3)], [LEFT.tail(3)]]), timestamp="ts")
    left.union(memory).select("ts", "k", (pl.col("v") * 10).alias("v10")).sink(sinks["union"])
    left.select(pl.col("k").str.to_uppercase(), "ts").sink(sinks["select_polars"])
    left.lookup_join(SQLiteTable(db, "info", key="k"), on="k", columns=["site", "level"]).sink(
        sinks["lookup"]
    )
    info = p.source(SQLiteTable(db, "info", key="k"))  # a table as a source: read on the driver
    left.join(info, on="k", how="left").sink(sinks["table_join"])
    joined = left.interval_join(right, on="k", lower_ms=-1_000, upper_ms=1_000)
    joined.sink(sinks["interval"])
    joined.late_left().sink(sinks["late_left"])
    left.map_batches(
        lambda df: df.with_columns(twice=pl.col("v") * 2),
        schema=pl.Schema(
            {"ts": pl.Int64(), "k": pl.String(), "v": pl.Int64(), "twice": pl.Int64()}
        ),
    ).sink(sinks["map_batches"])
    left.flat_map(
        lambda row: [{"k": row["k"], "v": row["v"]}] * 2 if row["v"] else [],
        output_schema={"k": pl.String, "v": pl.Int64},
    ).sink(sinks["flat_map"])
    windows = left.key_by("k").window(Tumbling(5_000)).agg(agg.sum("v"), agg.last("v"))
    windows.sink(sinks["window"])
    windows.late().sink(sinks["late"])
    # a window over the join's output: event time is join_time
    joined.key_by("k").window(Tumbling(10_000)).agg(agg.count(), agg.max("r")).sink(
        sinks["joined_window"]
    )
    return p


NAMES = [
    "union",
    "select_polars",
    "lookup",
    "table_join",
    "interval",
    "late_left",
    "map_batches",
    "flat_map",
    "window",
    "late",
    "joined_window",
]


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True) if frame.width else frame


def test_every_supported_node_equals_the_bounded_runner(spark: Any, tmp_path: Path) -> None:
    from strom.spark import run_spark

    on_spark = {n: MemorySink() for n in NAMES}
    bounded = {n: MemorySink() for n in NAMES}
    lowering = run_spark(_build(tmp_path, on_spark), spark)
    run_bounded(_build(tmp_path, bounded))
    assert "Select: native" in lowering.native and "Select: mapInArrow" in lowering.native
    for name in NAMES:
        got, want = on_spark[name], bounded[name]
        assert got.closed, name
        if not want.batches:
            assert not got.batches, name
            continue
        assert_frame_equal(_sorted(got.to_frame()), _sorted(want.to_frame()), check_row_order=True)
    assert on_spark["interval"].to_frame().height > 0
    assert on_spark["lookup"].to_frame()["site"].null_count() == 2  # keys None and c: no row


def test_file_sinks_are_written_by_spark(spark: Any, tmp_path: Path) -> None:
    from strom.spark import run_spark

    LEFT.write_parquet(tmp_path / "in.parquet")

    def build(directory: Path, fmt: Any) -> Pipeline:
        p = Pipeline()
        src = p.source(FileSource(str(tmp_path / "in.parquet"), "parquet"), timestamp="ts")
        src.key_by("k").window(Tumbling(5_000)).agg(agg.count(), agg.first("v")).sink(
            FileSink(directory, fmt)
        )
        return p

    for fmt in ("parquet", "ndjson"):
        run_spark(build(tmp_path / f"spark-{fmt}", fmt), spark)
        run_bounded(build(tmp_path / f"bounded-{fmt}", fmt))
        assert (tmp_path / f"spark-{fmt}" / "_SUCCESS").exists()
        suffix = "json" if fmt == "ndjson" else fmt
        read = pl.read_parquet if fmt == "parquet" else pl.read_ndjson
        got = pl.concat(
            [read(f) for f in sorted((tmp_path / f"spark-{fmt}").glob(f"part-*.{suffix}"))]
        )
        want = pl.concat([read(f) for f in sorted((tmp_path / f"bounded-{fmt}").glob("part-*"))])
        assert_frame_equal(_sorted(got), _sorted(want.cast(got.schema)))


class _Count(ProcessFunction):
    def process(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        pass


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda s: s.key_by("k").process(_Count(), output_schema={"k": pl.String}), "process"),
        (
            lambda s: s.key_by("k").window(Tumbling(5_000)).agg(agg.approx_count_distinct("v")),
            "approx_count_distinct",
        ),
        (lambda s: s.with_columns(c=pl.col("v").cum_sum()), "not row-wise (CumSum)"),
        (lambda s: s.select(pl.col("v") - pl.col("v").mean()), "not row-wise (Agg)"),
        (lambda s: s.map_batches(lambda df: df), "schema="),
        (
            lambda s: (
                s.map_batches(lambda df: df, schema=LEFT.schema)
                .key_by("k")
                .window(Tumbling(5_000))
                .agg(agg.first("v"))
            ),
            "agg.first('v') needs its input's order",
        ),
    ],
    ids=["process", "sketch", "cum_sum", "mean", "map_batches", "first_after_map"],
)
def test_unsupported_nodes_fail_before_running_naming_them(
    spark: Any, tmp_path: Path, build: Any, message: str
) -> None:
    from strom.spark import run_spark

    LEFT.write_parquet(tmp_path / "in.parquet")
    p = Pipeline()
    out = MemorySink()
    build(p.source(FileSource(str(tmp_path / "in.parquet"), "parquet"), timestamp="ts")).sink(out)
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_spark(p, spark)
    assert not out.opened


def test_import_strom_does_not_import_pyspark() -> None:
    code = "import sys, strom, strom.cli.main; assert 'pyspark' not in sys.modules, 'pyspark'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_plan_without_first_or_last_reads_no_row_order(spark: Any, tmp_path: Path) -> None:
    """Without first/last, Parquet is read without ``_metadata`` (row indices cost time)."""
    from strom.spark.lower import Lowering

    for i in range(3):
        LEFT.with_columns(pl.col("ts") + i).write_parquet(tmp_path / f"in-{i}.parquet")

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        files = FileSource(str(tmp_path / "in-*.parquet"), "parquet", partitions=2)
        src = p.source(files, timestamp="ts")
        src.key_by("k").window(Tumbling(5_000)).agg(agg.count(), agg.mean("v")).sink(sink)
        return p

    on_spark, bounded = MemorySink(), MemorySink()
    plan = build(on_spark).plan()
    frame = Lowering(plan, spark).frame(plan.sinks[0].input)
    assert "_metadata" not in frame.df._jdf.queryExecution().optimizedPlan().toString()
    from strom.spark import run_spark

    run_spark(plan, spark)
    run_bounded(build(bounded))
    assert_frame_equal(on_spark.to_frame(), bounded.to_frame())
