"""The Spark backend gives the bounded runner's results, and DuckDB's, on the same files.

Property tests draw events (ties in event time included, so first/last's tie-breaking
matters), write them as 1-4 Parquet, CSV or NDJSON files read by a FileSource of 1-3
partitions, and run one plan on Spark (local[2], the session fixture) and on the bounded
runner; a DuckDB query over the same rows is the independent reference. Few examples: each
Spark run costs seconds (``--run-slow`` runs more).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom import FileSource, Hopping, MemorySink, Pipeline, Session, Tumbling, agg, run_bounded
from strom.pipeline.windows import WindowSpec

EXAMPLES = 20 if os.environ.get("STROM_SLOW") else 4
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
AGGS = (
    agg.count(),
    agg.count("v"),
    agg.sum("v"),
    agg.min("v"),
    agg.max("v"),
    agg.mean("v"),
    agg.first("v"),
    agg.last("v"),
    agg.count_distinct("v"),
    agg.var("v"),
    agg.max("w"),
)
ORDER = ["window_end", "window_start", "k"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], str, int, WindowSpec]:
    fmt = draw(st.sampled_from(["parquet", "csv", "ndjson"]))
    nulls = fmt == "parquet"  # CSV/NDJSON type an all-null file's column by itself
    files = []
    for _ in range(draw(st.integers(1, 4))):
        rows = []
        for _ in range(draw(st.integers(1, 25))):
            v = draw(
                st.one_of(st.integers(-100, 100), st.none()) if nulls else st.integers(-100, 100)
            )
            rows.append(
                {"k": draw(st.sampled_from("abc")), "ts": draw(st.integers(-20, 60)) * 500, "v": v}
            )
        files.append(rows)
    kind = draw(st.sampled_from(["tumbling", "hopping", "session"]))
    spec: WindowSpec
    if kind == "tumbling":
        spec = Tumbling(draw(st.sampled_from([1_000, 5_000])), draw(st.sampled_from([0, 700])))
    elif kind == "hopping":
        spec = Hopping(draw(st.sampled_from([4_000, 6_000])), draw(st.sampled_from([1_000, 2_500])))
    else:
        spec = Session(draw(st.sampled_from([500, 2_000])))
    return files, fmt, draw(st.integers(1, 3)), spec


def _write(files: list[list[dict[str, Any]]], fmt: str, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    schema = {"k": pl.String, "ts": pl.Int64, "v": pl.Int64}
    for i, rows in enumerate(files):
        frame = pl.DataFrame(rows, schema=schema)
        path = directory / f"part-{i:03d}.{fmt}"
        if fmt == "parquet":
            frame.write_parquet(path)
        elif fmt == "csv":
            frame.write_csv(path)
        else:
            frame.write_ndjson(path)
    return str(directory / f"*.{fmt}")


def _pipeline(glob: str, fmt: Any, partitions: int, spec: WindowSpec, sink: MemorySink) -> Pipeline:
    p = Pipeline()
    (
        p.source(FileSource(glob, fmt, partitions=partitions), timestamp="ts")
        .filter(pl.col("v") > -90)  # native
        .with_columns(w=pl.col("v") / 4)  # division: the Polars expression in mapInArrow
        .key_by("k")
        .window(spec)
        .agg(*AGGS)
        .sink(sink)
    )
    return p


def _duckdb(files: list[list[dict[str, Any]]], partitions: int, spec: WindowSpec) -> pl.DataFrame:
    """count, sum, min, max and first/last (strom's tie-breaking spelled out) by DuckDB SQL."""
    count = min(partitions, len(files))
    events = pl.DataFrame(
        [
            {**row, "part": i % count, "file": i, "pos": j}
            for i, rows in enumerate(files)
            for j, row in enumerate(rows)
        ],
        schema={
            "k": pl.String,
            "ts": pl.Int64,
            "v": pl.Int64,
            "part": pl.Int64,
            "file": pl.Int64,
            "pos": pl.Int64,
        },
    ).filter(pl.col("v") > -90)
    con = duckdb.connect()
    con.register("events", events.to_arrow())
    picks = """count(*) AS count, sum(v) AS sum_v, min(v) AS min_v, max(v) AS max_v,
        min({'t': ts, 'p': part, 'f': file, 'q': pos, 'v': v})['v'] AS first_v,
        max({'t': ts, 'p': part, 'f': file, 'q': pos, 'v': v})['v'] AS last_v"""
    if isinstance(spec, Session):
        gap = spec.gap_ms
        sql = f"""
            WITH marked AS (
                SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY k ORDER BY ts) < {gap}
                               THEN 0 ELSE 1 END AS opens FROM events
            ), numbered AS (
                SELECT *, sum(opens) OVER (PARTITION BY k ORDER BY ts, opens DESC
                                           ROWS UNBOUNDED PRECEDING) AS session FROM marked
            )
            SELECT k, min(ts) AS window_start, max(ts) + {gap} AS window_end, {picks}
            FROM numbered GROUP BY k, session"""
    else:
        size = spec.size_ms
        slide = spec.size_ms if isinstance(spec, Tumbling) else spec.slide_ms
        offset = spec.offset_ms
        sql = f"""
            WITH pairs AS (
                SELECT e.*, e.ts - (((e.ts - {offset}) % {slide}) + {slide}) % {slide}
                            - j * {slide} AS ws
                FROM events e, range(0, {-(-size // slide)}) AS r(j)
            )
            SELECT k, ws AS window_start, ws + {size} AS window_end, {picks}
            FROM pairs WHERE ws + {size} > ts GROUP BY k, ws"""
    out = pl.from_arrow(con.sql(sql).to_arrow_table())
    assert isinstance(out, pl.DataFrame)
    return out.cast({c: pl.Int64 for c in out.columns if c != "k"}).sort(ORDER)


@SETTINGS
@given(case=cases())
def test_windows_on_spark_equal_the_bounded_runner_and_duckdb(
    spark: Any, tmp_path_factory: Any, case: Any
) -> None:
    from strom.spark import run_spark

    files, fmt, partitions, spec = case
    glob = _write(files, fmt, tmp_path_factory.mktemp("in"))
    on_spark, bounded = MemorySink(), MemorySink()
    lowering = run_spark(_pipeline(glob, fmt, partitions, spec, on_spark), spark)
    run_bounded(_pipeline(glob, fmt, partitions, spec, bounded))
    assert lowering.native == ["Filter: native", "WithColumns: mapInArrow"]
    got, want = on_spark.to_frame(), bounded.to_frame()
    assert got.schema == want.schema
    floats = ["mean_v", "var_v", "max_w"]
    assert_frame_equal(got.drop(floats), want.drop(floats))  # same order: both sort
    assert_frame_equal(got.select(floats), want.select(floats), check_exact=False, rel_tol=1e-9)
    reference = _duckdb(files, partitions, spec)
    assert_frame_equal(got.select(reference.columns), reference)
