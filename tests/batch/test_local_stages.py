"""Multi-stage plans and full sorts on the local engine equal the single-process bounded runner's
results (and DuckDB's): a stage's results feed the next stage's map tasks."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from strom import FileSink, MemorySink, Pipeline, agg, run_bounded
from strom.batch import run_local
from strom.batch.planner import lower
from strom.connectors import FileSource
from strom.pipeline import PlanError
from strom.pipeline.stream import Stream


def tables(directory: Path, files: int = 8, rows: int = 4_000) -> Path:
    """Three tables of an order book: ``lines`` (many files), ``orders`` and ``nations``.
    Amounts are small integers and keys repeat, so sorts and top-k have many ties."""
    rng = np.random.default_rng(5)
    (directory / "lines").mkdir(parents=True)
    for i in range(files):
        pl.DataFrame(
            {
                "order": rng.integers(0, 3_000, rows),
                "part": rng.integers(0, 50, rows),
                "qty": rng.integers(1, 6, rows),
                "price": rng.integers(1, 20, rows).astype(np.float64),
            }
        ).write_parquet(directory / "lines" / f"part-{i:05d}.parquet")
    nation = pl.Series(rng.integers(0, 12, 3_000)).set(pl.Series(rng.random(3_000) < 0.03), None)
    pl.DataFrame(
        {"okey": np.arange(3_000), "nation": nation, "prio": rng.integers(0, 4, 3_000)}
    ).write_parquet(directory / "orders.parquet")
    pl.DataFrame(
        {"nkey": np.arange(10), "name": [f"n{i % 7}" for i in range(10)], "region": [0, 1] * 5}
    ).write_parquet(directory / "nations.parquet")
    return directory


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tables(tmp_path_factory.mktemp("book"))


def read(p: Pipeline, directory: Path, name: str, partitions: int = 1, alias: str = "") -> Stream:
    glob = str(directory / "lines" / "*.parquet") if name == "lines" else str(directory / name)
    return p.source(FileSource(glob, "parquet", partitions=partitions), name=alias or name)


def run_both(build) -> tuple[pl.DataFrame, pl.DataFrame]:  # type: ignore[no-untyped-def]
    single, parallel = MemorySink(), MemorySink()
    run_bounded(build(single))
    run_local(build(parallel), workers=2, memory="2GiB")
    a, b = single.to_frame(), parallel.to_frame()
    assert a.schema == b.schema
    return a, b


def unordered(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def lines_orders(p: Pipeline, book: Path) -> Stream:
    return read(p, book, "lines", partitions=2).join(
        read(p, book, "orders.parquet"), left_on="order", right_on="okey"
    )


def test_join_feeding_an_aggregation(book: Path) -> None:
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        lines_orders(p, book).with_columns(amount=pl.col("qty") * pl.col("price")).key_by(
            "nation", "prio"
        ).agg(agg.sum("amount"), agg.count(), agg.max("qty")).sink(sink)
        return p

    single, parallel = run_both(build)
    assert single.height > 40 and single.get_column("nation").null_count() == 4  # a null key
    assert_frame_equal(unordered(single), unordered(parallel))
    sql = f"""
        select nation, prio, sum(qty * price) as sum_amount, count(*) as count,
               max(qty) as max_qty
        from read_parquet('{book}/lines/*.parquet') l
        join read_parquet('{book}/orders.parquet') o on l."order" = o.okey
        group by all
    """
    theirs = pl.from_arrow(duckdb.sql(sql).arrow())
    assert isinstance(theirs, pl.DataFrame)
    ours = unordered(parallel.drop("is_update"))
    assert_frame_equal(ours, unordered(theirs), check_dtypes=False)


def test_join_feeding_a_join_feeding_an_aggregation_then_a_sort(book: Path) -> None:
    # Q5's shape: lines x orders, x nations (itself a semi-join), revenue per name, sorted
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        regions = read(p, book, "nations.parquet", alias="regions").filter(pl.col("region") == 1)
        nations = read(p, book, "nations.parquet").join(regions, on="nkey", how="semi")
        lines_orders(p, book).join(nations, left_on="nation", right_on="nkey").with_columns(
            revenue=pl.col("qty") * pl.col("price")
        ).key_by("name").agg(agg.sum("revenue"), agg.count()).select(
            "name", "sum_revenue", "count"
        ).sort("sum_revenue", descending=True).sink(sink)
        return p

    single, parallel = run_both(build)
    assert single.height == 5
    assert single.equals(parallel)  # row for row


def test_an_aggregation_feeding_a_top_k_breaks_ties_by_key_order(book: Path) -> None:
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        read(p, book, "lines", partitions=3).key_by("order").agg(agg.sum("qty")).top_k(
            40, by="sum_qty", descending=True
        ).sink(sink)
        return p

    single, parallel = run_both(build)
    # ties: more orders share the 40th total than fit, so which ones come is input order's
    ties = single.get_column("sum_qty")
    assert ties.n_unique() < 40
    assert single.equals(parallel)


def test_an_aggregation_feeding_a_full_sort(book: Path) -> None:
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        read(p, book, "lines", partitions=2).key_by("order", "part").agg(
            agg.count(), agg.sum("price")
        ).filter(pl.col("count") > 0).sort(["count", "sum_price"], descending=[True, False]).sink(
            sink
        )
        return p

    single, parallel = run_both(build)
    assert single.height > 20_000
    assert single.equals(parallel)


def sort_pipeline(book: Path, sink: FileSink | MemorySink) -> Pipeline:
    p = Pipeline()
    read(p, book, "lines", partitions=3).with_columns(
        pl.when(pl.col("part") % 7 == 0).then(None).otherwise(pl.col("price")).alias("price")
    ).sort(["price", "qty"], descending=[False, True], nulls_last=True).sink(sink)
    return p


def test_a_full_sort_writes_files_in_global_order_with_ties_in_input_order(
    book: Path, tmp_path: Path
) -> None:
    single = MemorySink()
    run_bounded(sort_pipeline(book, single))
    out = tmp_path / "sorted"
    report = run_local(sort_pipeline(book, FileSink(out, "parquet")), workers=2, memory="2GiB")
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) >= 2 and (out / "_SUCCESS").exists()
    frames = [pl.read_parquet(path) for path in parts]
    assert all(f.height for f in frames)
    got = pl.concat(frames)
    want = single.to_frame()
    assert want.get_column("price").null_count() > 0
    assert report.rows_out == [want.height] == [32_000]
    assert got.equals(want)  # whole rows: ties (price, qty) in input order


def test_an_empty_input_through_several_stages(book: Path) -> None:
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        lines_orders(p, book).filter(pl.col("qty") > 100).key_by("nation").agg(agg.sum("qty")).sort(
            "sum_qty"
        ).sink(sink)
        return p

    single, parallel = MemorySink(), MemorySink()
    run_bounded(build(single))
    report = run_local(build(parallel), workers=2, memory="2GiB")
    assert report.rows_out == [0]
    assert single.to_frame().height == parallel.to_frame().height == 0


def test_first_and_last_over_an_aggregation_are_a_plan_error(book: Path) -> None:
    p = Pipeline()
    totals = read(p, book, "lines").key_by("order").agg(agg.sum("qty"))
    totals.key_by("sum_qty").agg(agg.first("order")).sink(MemorySink())
    with pytest.raises(PlanError, match=r"first/last.*results of KeyedAgg"):
        run_local(p, workers=1, memory="1GiB")


def test_stages_ship_only_the_columns_read_after_them(book: Path) -> None:
    p = Pipeline()
    joined = lines_orders(p, book)
    joined.with_columns(amount=pl.col("qty") * pl.col("price")).key_by("nation").agg(
        agg.sum("amount")
    ).sink(MemorySink())
    (job,) = lower(p.plan())
    first = {b.source_name: b.columns for b in job.spec.stages[0].branches}
    assert first == {"lines": ("order", "qty", "price"), "orders.parquet": ("okey", "nation")}
    # a map_batches function may read anything: everything before it is kept
    q = Pipeline()
    schema = pl.Schema(
        {"order": pl.Int64, "part": pl.Int64, "qty": pl.Int64, "price": pl.Float64}
        | {"nation": pl.Int64, "prio": pl.Int64}
    )
    lines_orders(q, book).map_batches(lambda f: f, schema=schema).key_by("nation").agg(
        agg.count()
    ).sink(MemorySink())
    (job,) = lower(q.plan())
    assert [b.columns for b in job.spec.stages[0].branches] == [None, None]
