"""Keyed aggregation, equi-joins, sort, top-k and distinct on Spark, against the bounded runner
over the same multi-file Parquet input (TPC-H-like: Decimal(15,2) money, Date columns, nulls,
ties), row order included where the bounded runner promises one."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
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
    Tumbling,
    agg,
    run_bounded,
)

MONEY = pl.Decimal(15, 2)


def _orders(seed: int, rows: int) -> pl.DataFrame:
    rng = random.Random(seed)
    pick = rng.choice
    return pl.DataFrame(
        {
            "ts": [pick([None, *range(0, 50_000, 5_000)]) for _ in range(rows)],
            "custkey": [pick([None, 1, 2, 3, 4, 5, 9]) for _ in range(rows)],
            "price": [
                pick([None, Decimal("10.50"), Decimal("99.99"), Decimal("1234.56")])
                for _ in range(rows)
            ],
            "odate": [
                pick([dt.date(1995, 3, d) for d in (1, 2, 15)] + [None]) for _ in range(rows)
            ],
            "prio": [pick(["1-URGENT", "2-HIGH", "5-LOW", None]) for _ in range(rows)],
            "comment": [f"o{seed}-{i}" for i in range(rows)],
        },
        schema={
            "ts": pl.Int64,
            "custkey": pl.Int64,
            "price": MONEY,
            "odate": pl.Date,
            "prio": pl.String,
            "comment": pl.String,
        },
    )


CUSTOMER = pl.DataFrame(
    {
        "custkey": [1, 2, 2, 3, None, 7],
        "name": ["Customer#1", "Customer#2", "Customer#2b", "Customer#3", "nobody", "Customer#7"],
        "acctbal": [Decimal("711.56"), Decimal("-12.00"), None, Decimal("0.01"), None, None],
        "comment": ["c1", "c2", "c2b", "c3", "cn", "c7"],
    },
    schema={"custkey": pl.Int64, "name": pl.String, "acctbal": MONEY, "comment": pl.String},
)

ORDERED = [
    "keyed",
    "keyed2",
    "sorted",
    "top",
    "first_per_cust",
    "rows",
    "sorted_agg",
    "resorted",
    "union_distinct",
    "window",
]
UNORDERED = ["inner", "left", "semi", "anti", "joined_agg", "self"]


def _write(tmp: Path) -> None:
    if not (tmp / "orders-0.parquet").exists():
        for i in range(3):  # three files dealt to two partitions: file 2 after file 0
            _orders(i, 25).write_parquet(tmp / f"orders-{i}.parquet")
        (tmp / "customer").mkdir()
        CUSTOMER.head(3).write_parquet(tmp / "customer" / "part-0.parquet")
        CUSTOMER.tail(3).write_parquet(tmp / "customer" / "part-1.parquet")


def _build(tmp: Path, sinks: dict[str, MemorySink], out: Path) -> Pipeline:
    _write(tmp)
    p = Pipeline()
    files = FileSource(str(tmp / "orders-*.parquet"), "parquet", partitions=2)
    orders = p.source(files, timestamp="ts")
    customer = p.source(FileSource(str(tmp / "customer" / "*.parquet"), "parquet"))
    keyed = orders.key_by("custkey").agg(
        agg.count(),
        agg.sum("price"),
        agg.mean("price"),
        agg.min("odate"),
        agg.max("price"),
        agg.first("prio"),
        agg.last("comment"),
        agg.count_distinct("prio"),
    )
    keyed.sink(sinks["keyed"])
    keyed.sink(FileSink(out / "keyed", "parquet"))
    orders.key_by("prio", "odate").agg(agg.sum("price"), agg.first("custkey")).sink(sinks["keyed2"])
    for how in ("inner", "left", "semi", "anti"):
        orders.join(customer, on="custkey", how=how).sink(sinks[how])  # type: ignore[arg-type]
    joined = orders.join(customer, on="custkey")
    joined.key_by("name").agg(agg.sum("acctbal"), agg.count()).sink(sinks["joined_agg"])
    by_date = orders.sort(["odate", "price"], descending=[False, True], nulls_last=True)
    by_date.sink(sinks["sorted"])
    by_date.sink(FileSink(out / "sorted", "parquet"))
    orders.top_k(7, by="price").sink(sinks["top"])
    orders.distinct("custkey").sink(sinks["first_per_cust"])
    orders.select("custkey", "prio").distinct().sink(sinks["rows"])
    keyed.sort("count", descending=True).sink(sinks["sorted_agg"])  # ties: by key
    by_date.distinct("prio").sort("ts").sink(sinks["resorted"])  # distinct of sorted rows
    # sources are numbered in the order sinks reach them: the memory source's partitions
    # follow the files', so its rows' PART follow theirs, as the union's input order does
    memory = p.source(MemorySource([[_orders(7, 9)], [_orders(8, 9)]]), timestamp="ts")
    orders.union(memory).distinct("prio", "odate").sink(sinks["union_distinct"])
    orders.join(orders.select("custkey", "odate"), on="custkey").sink(sinks["self"])
    timed = orders.filter(pl.col("ts").is_not_null()).key_by("prio")
    timed.window(Tumbling(20_000)).agg(agg.sum("price"), agg.first("odate")).sink(sinks["window"])
    return p


def _files(directory: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(f) for f in sorted(directory.glob("part-*.parquet"))])


def test_relational_nodes_equal_the_bounded_runner(spark: Any, tmp_path: Path) -> None:
    from strom.spark import run_spark

    names = ORDERED + UNORDERED
    on_spark = {n: MemorySink() for n in names}
    bounded = {n: MemorySink() for n in names}
    run_spark(_build(tmp_path, on_spark, tmp_path / "spark"), spark)
    run_bounded(_build(tmp_path, bounded, tmp_path / "bounded"))
    for name in names:
        got, want = on_spark[name].to_frame(), bounded[name].to_frame()
        assert want.height > 0, name
        if name in UNORDERED:
            got, want = (f.sort(f.columns, nulls_last=True) for f in (got, want))
        try:
            assert_frame_equal(got, want, check_row_order=True)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    for name in ("keyed", "window"):
        assert on_spark[name].to_frame().schema["sum_price"] == pl.Decimal(38, 2)
    assert on_spark["keyed"].to_frame()["custkey"][0] is None  # the null key, first
    for name in ("keyed", "sorted"):
        want = _files(tmp_path / "bounded" / name)
        assert_frame_equal(_files(tmp_path / "spark" / name), want.cast(want.schema))


def _mapped(p: Pipeline, s: Any) -> Any:
    return s.map_batches(lambda df: df, schema=_orders(0, 1).schema)


def _after(p: Pipeline, s: Any) -> Any:
    """A source numbered after ``s``'s (sources are numbered in the order sinks reach them)."""
    s.sink(MemorySink())
    return p.source(MemorySource([[_orders(7, 3)]]), timestamp="ts")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p, s: _mapped(p, s).sort("price"), "Sort: its ties follow the input's order"),
        (lambda p, s: _mapped(p, s).distinct("prio"), "Distinct: its ties follow"),
        (lambda p, s: _after(p, s).union(s).distinct(), "a union of branches out of source"),
    ],
    ids=["sort_after_map", "distinct_after_map", "union_out_of_order"],
)
def test_order_spark_cannot_know_is_refused(
    spark: Any, tmp_path: Path, build: Any, message: str
) -> None:
    from strom.spark import run_spark

    _write(tmp_path)
    p, out = Pipeline(), MemorySink()
    files = FileSource(str(tmp_path / "orders-*.parquet"), "parquet")
    build(p, p.source(files, timestamp="ts")).sink(out)
    with pytest.raises(PlanError, match=message):
        run_spark(p, spark)
    assert not out.opened


def test_a_row_order_survives_only_steps_that_keep_its_columns() -> None:
    """A pure function: no Spark session."""
    pytest.importorskip("pyspark")
    from strom.pipeline.plan import FilterNode, SelectNode, SourceNode, WithColumnsNode
    from strom.spark.lower import kept_order
    from strom.spark.relational import ROW_ORDER, SortKey

    up = SourceNode(MemorySource([[_orders(0, 2)]]), None)
    by_key = (SortKey("custkey"), SortKey("ts", descending=True))
    assert kept_order(FilterNode(up, pl.col("ts") > 0), by_key) == by_key
    assert kept_order(WithColumnsNode(up, (pl.col("ts") * 2,)), by_key) is None  # replaced
    assert kept_order(WithColumnsNode(up, (pl.col("ts").alias("t2"),)), by_key) == by_key
    assert kept_order(WithColumnsNode(up, (pl.col("ts", "custkey") + 1,)), by_key) is None
    assert kept_order(SelectNode(up, (pl.col("ts"), pl.col("custkey"))), by_key) == by_key
    assert kept_order(SelectNode(up, (pl.col("ts"),)), by_key) is None  # dropped
    assert kept_order(SelectNode(up, (pl.col("ts"),)), ROW_ORDER) == ROW_ORDER  # rides along
    assert kept_order(SelectNode(up, (pl.col("ts"),)), None) is None
