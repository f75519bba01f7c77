"""TPC-H Q1, Q3, Q5, Q6, Q12 and Q18 in strom's pipeline API and in hand-written Polars.

Money columns are ``Decimal(15, 2)``. Polars keeps the larger operand's scale when it multiplies
two decimals, so a product of prices and rates is cast to a wider scale first (4 for one
product, 6 for two): the answers are then exact, equal to DuckDB's decimal arithmetic.
The SQL every answer is checked against is in :mod:`.sql`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import polars as pl

from strom import Pipeline, agg
from strom.pipeline import Stream

__all__ = ["POLARS", "QUERIES", "STROM"]

QUERIES = ("q1", "q3", "q5", "q6", "q12", "q18")

Table = Callable[[str], Stream]
"""A query's access to the tables: a table's name to a stream of its rows."""
Scan = Callable[[str], pl.LazyFrame]


def _d(text: str) -> pl.Expr:
    return pl.lit(Decimal(text), dtype=pl.Decimal(15, 2))


def _revenue() -> pl.Expr:
    """``l_extendedprice * (1 - l_discount)``, exact at scale 4."""
    price = pl.col("l_extendedprice").cast(pl.Decimal(38, 4))
    return price * (_d("1") - pl.col("l_discount"))


def _charge() -> pl.Expr:
    """``l_extendedprice * (1 - l_discount) * (1 + l_tax)``, exact at scale 6."""
    return _revenue().cast(pl.Decimal(38, 6)) * (_d("1") + pl.col("l_tax"))


# -- strom ----------------------------------------------------------------------------------


def strom_q1(table: Table) -> Stream:
    return (
        table("lineitem")
        .filter(pl.col("l_shipdate") <= date(1998, 9, 2))
        .with_columns(disc_price=_revenue(), charge=_charge())
        .key_by("l_returnflag", "l_linestatus")
        .agg(
            agg.sum("l_quantity", name="sum_qty"),
            agg.sum("l_extendedprice", name="sum_base_price"),
            agg.sum("disc_price", name="sum_disc_price"),
            agg.sum("charge", name="sum_charge"),
            agg.mean("l_quantity", name="avg_qty"),
            agg.mean("l_extendedprice", name="avg_price"),
            agg.mean("l_discount", name="avg_disc"),
            agg.count(name="count_order"),
        )
        .sort(["l_returnflag", "l_linestatus"])
    )


def strom_q3(table: Table) -> Stream:
    customers = table("customer").filter(pl.col("c_mktsegment") == "BUILDING")
    orders = (
        table("orders")
        .filter(pl.col("o_orderdate") < date(1995, 3, 15))
        .join(customers, left_on="o_custkey", right_on="c_custkey", how="semi")
    )
    return (
        table("lineitem")
        .filter(pl.col("l_shipdate") > date(1995, 3, 15))
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        .with_columns(revenue=_revenue())
        .key_by("l_orderkey", "o_orderdate", "o_shippriority")
        .agg(agg.sum("revenue", name="revenue"))
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .top_k(10, by=["revenue", "o_orderdate"], descending=[True, False])
    )


def strom_q5(table: Table) -> Stream:
    asia = table("region").filter(pl.col("r_name") == "ASIA")
    nations = table("nation").join(asia, left_on="n_regionkey", right_on="r_regionkey", how="semi")
    suppliers = table("supplier").join(nations, left_on="s_nationkey", right_on="n_nationkey")
    customers = table("customer").select("c_custkey", "c_nationkey")
    orders = (
        table("orders")
        .filter(pl.col("o_orderdate").is_between(date(1994, 1, 1), date(1995, 1, 1), "left"))
        .join(customers, left_on="o_custkey", right_on="c_custkey")
    )
    return (
        table("lineitem")
        .join(orders, left_on="l_orderkey", right_on="o_orderkey")
        .join(
            suppliers, left_on=["l_suppkey", "c_nationkey"], right_on=["s_suppkey", "s_nationkey"]
        )
        .with_columns(revenue=_revenue())
        .key_by("n_name")
        .agg(agg.sum("revenue", name="revenue"))
        .select("n_name", "revenue")
        .sort("revenue", descending=True)
    )


def _q6_lines() -> pl.Expr:
    return (
        pl.col("l_shipdate").is_between(date(1994, 1, 1), date(1995, 1, 1), "left")
        & pl.col("l_discount").is_between(_d("0.05"), _d("0.07"))
        & (pl.col("l_quantity") < _d("24"))
    )


def _q6_revenue() -> pl.Expr:
    """``l_extendedprice * l_discount``, exact at scale 4."""
    return pl.col("l_extendedprice").cast(pl.Decimal(38, 4)) * pl.col("l_discount")


def strom_q6(table: Table) -> Stream:
    return (
        table("lineitem")
        .filter(_q6_lines())
        .with_columns(revenue=_q6_revenue())
        .agg(agg.sum("revenue", name="revenue"))
    )


def _priority_counts() -> tuple[pl.Expr, pl.Expr]:
    high = pl.col("o_orderpriority").is_in(["1-URGENT", "2-HIGH"])
    return high.cast(pl.Int64).alias("high"), (~high).cast(pl.Int64).alias("low")


def _q12_lines() -> pl.Expr:
    return (
        pl.col("l_shipmode").is_in(["MAIL", "SHIP"])
        & (pl.col("l_commitdate") < pl.col("l_receiptdate"))
        & (pl.col("l_shipdate") < pl.col("l_commitdate"))
        & pl.col("l_receiptdate").is_between(date(1994, 1, 1), date(1995, 1, 1), "left")
    )


def strom_q12(table: Table) -> Stream:
    lineitem = table("lineitem")
    return (
        lineitem.filter(_q12_lines())
        .join(table("orders"), left_on="l_orderkey", right_on="o_orderkey")
        .with_columns(*_priority_counts())
        .key_by("l_shipmode")
        .agg(agg.sum("high", name="high_line_count"), agg.sum("low", name="low_line_count"))
        .select("l_shipmode", "high_line_count", "low_line_count")
        .sort("l_shipmode")
    )


def strom_q18(table: Table) -> Stream:
    # the orders' total quantity is also the query's sum(l_quantity): one order per group
    large = (
        table("lineitem")
        .key_by("l_orderkey")
        .agg(agg.sum("l_quantity", name="sum_qty"))
        .filter(pl.col("sum_qty") > _d("300"))
    )
    return (
        large.join(table("orders"), left_on="l_orderkey", right_on="o_orderkey")
        .join(table("customer"), left_on="o_custkey", right_on="c_custkey")
        .select(
            "c_name",
            pl.col("o_custkey").alias("c_custkey"),
            pl.col("l_orderkey").alias("o_orderkey"),
            "o_orderdate",
            "o_totalprice",
            "sum_qty",
        )
        .top_k(100, by=["o_totalprice", "o_orderdate"], descending=[True, False])
    )


STROM: dict[str, Callable[[Table], Stream]] = {
    "q1": strom_q1,
    "q3": strom_q3,
    "q5": strom_q5,
    "q6": strom_q6,
    "q12": strom_q12,
    "q18": strom_q18,
}


# -- Polars (lazy; run on its streaming engine) ---------------------------------------------


def polars_q1(scan: Scan) -> pl.LazyFrame:
    return (
        scan("lineitem")
        .filter(pl.col("l_shipdate") <= date(1998, 9, 2))
        .group_by("l_returnflag", "l_linestatus")
        .agg(
            pl.col("l_quantity").sum().alias("sum_qty"),
            pl.col("l_extendedprice").sum().alias("sum_base_price"),
            _revenue().sum().alias("sum_disc_price"),
            _charge().sum().alias("sum_charge"),
            pl.col("l_quantity").mean().alias("avg_qty"),
            pl.col("l_extendedprice").mean().alias("avg_price"),
            pl.col("l_discount").mean().alias("avg_disc"),
            pl.len().alias("count_order"),
        )
        .sort("l_returnflag", "l_linestatus")
    )


def polars_q3(scan: Scan) -> pl.LazyFrame:
    customers = scan("customer").filter(pl.col("c_mktsegment") == "BUILDING")
    orders = scan("orders").filter(pl.col("o_orderdate") < date(1995, 3, 15))
    lines = scan("lineitem").filter(pl.col("l_shipdate") > date(1995, 3, 15))
    return (
        customers.join(orders, left_on="c_custkey", right_on="o_custkey")
        .join(lines, left_on="o_orderkey", right_on="l_orderkey")
        .group_by(pl.col("o_orderkey").alias("l_orderkey"), "o_orderdate", "o_shippriority")
        .agg(_revenue().sum().alias("revenue"))
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .sort(["revenue", "o_orderdate"], descending=[True, False])
        .head(10)
    )


def polars_q5(scan: Scan) -> pl.LazyFrame:
    return (
        scan("region")
        .filter(pl.col("r_name") == "ASIA")
        .join(scan("nation"), left_on="r_regionkey", right_on="n_regionkey")
        .join(scan("customer"), left_on="n_nationkey", right_on="c_nationkey")
        .join(
            scan("orders").filter(
                pl.col("o_orderdate").is_between(date(1994, 1, 1), date(1995, 1, 1), "left")
            ),
            left_on="c_custkey",
            right_on="o_custkey",
        )
        .join(scan("lineitem"), left_on="o_orderkey", right_on="l_orderkey")
        .join(
            scan("supplier"),
            left_on=["l_suppkey", "n_nationkey"],
            right_on=["s_suppkey", "s_nationkey"],
        )
        .group_by("n_name")
        .agg(_revenue().sum().alias("revenue"))
        .sort("revenue", descending=True)
    )


def polars_q6(scan: Scan) -> pl.LazyFrame:
    return scan("lineitem").filter(_q6_lines()).select(_q6_revenue().sum().alias("revenue"))


def polars_q12(scan: Scan) -> pl.LazyFrame:
    lines = scan("lineitem")
    return (
        lines.filter(_q12_lines())
        .join(scan("orders"), left_on="l_orderkey", right_on="o_orderkey")
        .group_by("l_shipmode")
        .agg(
            pl.col("o_orderpriority").is_in(["1-URGENT", "2-HIGH"]).sum().alias("high_line_count"),
            (~pl.col("o_orderpriority").is_in(["1-URGENT", "2-HIGH"]))
            .sum()
            .alias("low_line_count"),
        )
        .sort("l_shipmode")
    )


def polars_q18(scan: Scan) -> pl.LazyFrame:
    lines = scan("lineitem")
    large = (
        lines.group_by("l_orderkey")
        .agg(pl.col("l_quantity").sum().alias("sum_qty"))
        .filter(pl.col("sum_qty") > _d("300"))
    )
    return (
        scan("orders")
        .join(large, left_on="o_orderkey", right_on="l_orderkey", how="semi")
        .join(lines, left_on="o_orderkey", right_on="l_orderkey")
        .join(scan("customer"), left_on="o_custkey", right_on="c_custkey")
        .group_by(
            "c_name",
            pl.col("o_custkey").alias("c_custkey"),
            "o_orderkey",
            "o_orderdate",
            "o_totalprice",
        )
        .agg(pl.col("l_quantity").sum().alias("sum_qty"))
        .sort(["o_totalprice", "o_orderdate"], descending=[True, False])
        .head(100)
    )


POLARS: dict[str, Callable[[Scan], pl.LazyFrame]] = {
    "q1": polars_q1,
    "q3": polars_q3,
    "q5": polars_q5,
    "q6": polars_q6,
    "q12": polars_q12,
    "q18": polars_q18,
}


def strom_pipeline(query: str, glob: Callable[[str], str]) -> tuple[Pipeline, Stream]:
    """``query`` as a strom pipeline over the tables' files (``glob``: a table's file glob)."""
    from strom import FileSource

    p = Pipeline()
    streams: dict[str, Stream] = {}

    def table(name: str) -> Stream:
        if name not in streams:
            streams[name] = p.source(FileSource(glob(name), "parquet"), name=name)
        return streams[name]

    return p, STROM[query](table)
