"""Keyed aggregations (no window) and equi-joins on the local engine equal the single-process
bounded runner's results: the same columns, types and values (rows in any order)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from polars.testing import assert_frame_equal

from strom import FileSink, MemorySink, Pipeline, agg, run_bounded
from strom.batch import run_local
from strom.connectors import FileSource
from strom.connectors.files import FileFormat
from strom.pipeline import PlanError

AGGS = (
    agg.count(),
    agg.count("v"),
    agg.sum("v"),
    agg.mean("v"),
    agg.min("v"),
    agg.max("v"),
    agg.first("v"),
    agg.last("v"),
    agg.var("v"),
    agg.std("v"),
    agg.first("cat", name="first_cat"),
    agg.last("cat", name="last_cat"),
    agg.count_distinct("cat"),
    agg.approx_count_distinct("v"),
)
FLOATS = ("sum_v", "mean_v", "var_v", "std_v")
"""Floating-point sums and moments: the addition order differs, so the last bits may."""

Build = Callable[[MemorySink], Pipeline]


def both(build: Build, **local: object) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The single-process runner's result and the local engine's, rows sorted alike."""
    single, parallel = MemorySink(), MemorySink()
    run_bounded(build(single))
    run_local(build(parallel), workers=2, memory="2GiB", **local)  # type: ignore[arg-type]
    a, b = single.to_frame(), parallel.to_frame()
    assert a.schema == b.schema
    return a.sort(a.columns, nulls_last=True), b.sort(b.columns, nulls_last=True)


def assert_same(single: pl.DataFrame, parallel: pl.DataFrame) -> None:
    """Equal, floats up to the last bits; everything else exactly."""
    assert_frame_equal(single, parallel, check_exact=False, rel_tol=1e-12)
    exact = [c for c in single.columns if c not in FLOATS]
    assert single.select(exact).equals(parallel.select(exact))


def source(pipeline: Pipeline, glob: str, fmt: FileFormat = "parquet", **kw: object):  # type: ignore[no-untyped-def]
    return pipeline.source(FileSource(glob, fmt, partitions=3), **kw)  # type: ignore[arg-type]


# -- keyed aggregation ------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "timestamp"), [("parquet", "ts"), ("csv", None)])
def test_keyed_agg_equals_the_single_process_runner(
    events, fmt: FileFormat, timestamp: str | None
) -> None:
    directory = events(files=10, format=fmt)

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        stream = source(p, str(directory / f"*.{fmt}"), fmt, timestamp=timestamp)
        stream.filter(pl.col("k") != 3).key_by("k", "cat").agg(*AGGS).with_columns(
            (pl.col("count") * 2).alias("twice")
        ).sink(sink)
        return p

    single, parallel = both(build)
    assert single.height > 100
    assert_same(single, parallel)


def test_keyed_agg_with_ties_across_many_tasks(events) -> None:
    # ~14 MB in 24 files: each partition's files are cut into several map tasks, and event
    # times tie, so first/last break ties across tasks and partitions
    directory = events(files=24, rows=40_000, keys=5)

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        stream = source(p, str(directory / "*.parquet"), timestamp="ts")
        stream.key_by("k").agg(agg.first("v"), agg.last("v"), agg.last("cat"), agg.count()).sink(
            sink
        )
        return p

    single, parallel = both(build)
    assert single.equals(parallel)


def typed_files(directory: Path, files: int = 6, rows: int = 400) -> Path:
    """Files with null keys, a Decimal and a Date column, and null event times."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(files):
        keys = rng.integers(0, 6, rows).astype(object)
        keys[rng.random(rows) < 0.1] = None
        ts = rng.integers(0, 50, rows).astype(object)
        ts[rng.random(rows) < 0.05] = None
        frame = pl.DataFrame(
            {
                "ts": pl.Series(ts.tolist(), dtype=pl.Int64),
                "k": pl.Series(keys.tolist(), dtype=pl.Int64),
                "name": [f"n{x}" for x in rng.integers(0, 4, rows)],
                "price": pl.Series(
                    [Decimal(int(x)) / 100 for x in rng.integers(0, 100_000, rows)],
                    dtype=pl.Decimal(12, 2),
                ),
                "day": [
                    dt.date(2026, 1, 1) + dt.timedelta(days=int(x))
                    for x in rng.integers(0, 90, rows)
                ],
            }
        )
        frame.write_parquet(directory / f"part-{i:05d}.parquet")
    return directory


def test_keyed_agg_of_null_keys_decimal_and_date(tmp_path: Path) -> None:
    directory = typed_files(tmp_path / "typed")

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        stream = source(p, str(directory / "*.parquet"), timestamp="ts")
        stream.key_by("k", "name").agg(
            agg.count(),
            agg.sum("price"),
            agg.min("price"),
            agg.max("day"),
            agg.min("day"),
            agg.first("day"),
            agg.last("price"),
        ).sink(sink)
        return p

    single, parallel = both(build)
    assert single.schema["sum_price"] == pl.Decimal(38, 2)
    assert single.filter(pl.col("k").is_null()).height == 4  # null is a key like any other
    assert single.equals(parallel)


def test_keyed_agg_of_counts_sums_and_extremes_merges_columnar(tmp_path: Path) -> None:
    # only count/sum/min/max: the reduce merges the partials in one Polars group-by; a group
    # whose values are all null sums to null, a NaN gives way to any number, Decimals add exactly
    directory = typed_files(tmp_path / "typed")

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        stream = source(p, str(directory / "*.parquet")).with_columns(
            v=pl.when(pl.col("k") == 2).then(None).otherwise(pl.col("ts")),
            f=pl.when(pl.col("ts") % 7 == 0).then(float("nan")).otherwise(pl.col("ts") / 3),
        )
        stream.key_by("k", "name").agg(
            agg.count(),
            agg.count("v"),
            agg.sum("v"),
            agg.sum("price"),
            agg.min("f"),
            agg.max("f"),
            agg.max("day"),
        ).sink(sink)
        return p

    single, parallel = both(build)
    assert single.filter(pl.col("sum_v").is_null()).height >= 4  # k == 2: no value to sum
    assert single.get_column("max_f").is_nan().sum() == 0
    assert single.equals(parallel)


def test_keyed_agg_by_a_date_key(tmp_path: Path) -> None:
    directory = typed_files(tmp_path / "typed")

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        stream = source(p, str(directory / "*.parquet"))
        stream.key_by("day").agg(agg.sum("price"), agg.count("k"), agg.last("name")).sink(sink)
        return p

    single, parallel = both(build)
    assert single.height == 90
    assert single.equals(parallel)


def test_keyed_agg_of_no_rows(events, tmp_path: Path) -> None:
    directory = events(files=4)
    empty = tmp_path / "empty"
    empty.mkdir()
    pl.read_parquet(directory / "part-00000.parquet").clear().write_parquet(empty / "e.parquet")
    for glob in (str(directory / "*.parquet"), str(empty / "*.parquet")):

        def build(sink: MemorySink, glob: str = glob) -> Pipeline:
            p = Pipeline()
            stream = source(p, glob, timestamp="ts")
            stream.filter(pl.col("k") < 0).key_by("k").agg(agg.count(), agg.first("v")).sink(sink)
            return p

        single, parallel = MemorySink(), MemorySink()
        run_bounded(build(single))
        report = run_local(build(parallel), workers=2, memory="2GiB")
        assert single.to_frame().height == parallel.to_frame().height == 0
        assert report.rows_out == [0]


def test_keyed_agg_into_parquet_files(events, tmp_path: Path) -> None:
    directory = events(files=6)
    out = tmp_path / "out"

    def build(sink: MemorySink | FileSink) -> Pipeline:
        p = Pipeline()
        stream = source(p, str(directory / "*.parquet"), timestamp="ts")
        stream.key_by("k").agg(agg.count(), agg.max("v"), agg.last("cat")).sink(sink)
        return p

    report = run_local(build(FileSink(out, "parquet")), workers=2, memory="2GiB")
    assert (out / "_SUCCESS").exists()
    single = MemorySink()
    run_bounded(build(single))
    got = pl.read_parquet(out / "part-*.parquet").sort("k")
    assert got.equals(single.to_frame())
    assert report.rows_out == [40]


def test_approx_quantile_in_a_keyed_agg_is_a_plan_error(events) -> None:
    directory = events(files=1)
    p = Pipeline()
    stream = source(p, str(directory / "*.parquet"), timestamp="ts")
    stream.key_by("k").agg(agg.approx_quantile("v", 0.5)).sink(MemorySink())
    with pytest.raises(PlanError, match=r"approx_quantile.*without --engine local"):
        run_local(p, workers=1, memory="1GiB")


# -- equi-joins -------------------------------------------------------------------------------


def join_pipeline(
    left_glob: str, right_glob: str, how: str, on: str | list[str] = "k"
) -> Callable[[MemorySink], Pipeline]:
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        left = source(p, left_glob, timestamp="ts")
        right = p.source(FileSource(right_glob, "parquet", partitions=2), name="right")
        right = right.filter(pl.col("ts") < 2_000).with_columns(pl.col("ts").alias("rts"))
        left.join(right, on=on, how=how).with_columns(  # type: ignore[arg-type]
            pl.col("k").cast(pl.String).alias("ks")
        ).sink(sink)
        return p

    return build


@pytest.mark.parametrize("how", ["inner", "left", "semi", "anti"])
def test_join_equals_the_single_process_runner(events, how: str) -> None:
    left, right = events("left", files=8, seed=1), events("right", files=5, seed=2, keys=60)
    build = join_pipeline(str(left / "*.parquet"), str(right / "*.parquet"), how)
    single, parallel = both(build)
    assert single.height > 100
    assert single.equals(parallel)


@pytest.mark.parametrize("how", ["inner", "left", "semi", "anti"])
def test_join_on_two_keys_with_nulls_decimal_and_date(tmp_path: Path, how: str) -> None:
    left = typed_files(tmp_path / "left", files=5, rows=300)
    right = tmp_path / "right"
    right.mkdir()
    frame = pl.read_parquet(left / "*.parquet").sample(200, seed=4)
    frame.slice(0, 100).write_parquet(right / "a.parquet")
    frame.slice(100).write_parquet(right / "b.parquet")

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        a = source(p, str(left / "*.parquet"), timestamp="ts")
        b = p.source(FileSource(str(right / "*.parquet"), "parquet"), name="right")
        a.join(b.select("k", "day", "price", "name"), on=["k", "day"], how=how).sink(sink)  # type: ignore[arg-type]
        return p

    single, parallel = both(build)
    assert single.height > 0
    if how in ("left", "anti"):  # a left row with a null key is unmatched, and kept
        assert single.filter(pl.col("k").is_null()).height > 0
    assert single.equals(parallel)


def test_join_into_ndjson_files(events, tmp_path: Path) -> None:
    left, right = events("left", files=4, seed=1), events("right", files=3, seed=2)
    out = tmp_path / "out"

    def build(sink: MemorySink | FileSink) -> Pipeline:
        p = Pipeline()
        a = source(p, str(left / "*.parquet"), timestamp="ts")
        b = p.source(FileSource(str(right / "*.parquet"), "parquet"), name="right")
        b = b.filter(pl.col("ts") < 500).select("k", pl.col("v").alias("w"))
        a.join(b, on="k", how="left").sink(sink)
        return p

    run_local(build(FileSink(out, "ndjson")), workers=2, memory="2GiB")
    single = MemorySink()
    run_bounded(build(single))
    got = pl.read_ndjson(list(out.glob("part-*.ndjson")), schema=single.to_frame().schema)
    columns = got.columns
    assert got.sort(columns, nulls_last=True).equals(
        single.to_frame().sort(columns, nulls_last=True)
    )


# -- property: any split of any rows into files -------------------------------------------------

ROWS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 5)),
        st.one_of(st.none(), st.integers(-3, 3)),
        st.integers(0, 20),
    ),
    max_size=60,
)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=ROWS, other=ROWS, cuts=st.integers(1, 4), how=st.sampled_from(["left", "anti"]))
def test_any_input_split_any_way(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[int | None, int | None, int]],
    other: list[tuple[int | None, int | None, int]],
    cuts: int,
    how: str,
) -> None:
    root = tmp_path_factory.mktemp("prop")
    schema = {"k": pl.Int64, "v": pl.Int64, "ts": pl.Int64}
    for name, data in (("left", rows), ("right", other)):
        (root / name).mkdir()
        frame = pl.DataFrame(data, schema=schema, orient="row")
        for i, part in enumerate(np.array_split(np.arange(frame.height), cuts)):
            frame[part.tolist()].write_parquet(root / name / f"p{i}.parquet")

    def build(aggregated: MemorySink, joined: MemorySink) -> Pipeline:
        p = Pipeline()
        left = source(p, str(root / "left" / "*.parquet"), timestamp="ts")
        right = p.source(FileSource(str(root / "right" / "*.parquet"), "parquet"), name="r")
        left.key_by("k").agg(
            agg.count(), agg.sum("v"), agg.first("v"), agg.last("v"), agg.min("v"), agg.var("v")
        ).sink(aggregated)
        left.join(right.select("k", pl.col("v").alias("w")), on="k", how=how).sink(joined)  # type: ignore[arg-type]
        return p

    single, parallel = (MemorySink(), MemorySink()), (MemorySink(), MemorySink())
    run_bounded(build(*single))
    run_local(build(*parallel), workers=2, memory="2GiB")
    for one, other in zip(single, parallel, strict=True):
        a, b = one.to_frame(), other.to_frame()
        if a.height == 0:
            assert b.height == 0
            continue
        assert a.schema == b.schema
        a, b = a.sort(a.columns, nulls_last=True), b.sort(b.columns, nulls_last=True)
        assert_frame_equal(a, b, check_exact=False, rel_tol=1e-12)
