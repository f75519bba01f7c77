"""Keyed aggregation, equi-joins, sort/top-k and distinct: bounded results == DuckDB SQL over the
same rows (Date and Decimal columns included), and the streaming keyed aggregation's final table
== the bounded group-by, on random inputs over 1-3 partitions."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom import MemorySink, MemorySource, Pipeline, PlanError, SQLiteSink, agg
from strom.bounded import run_bounded
from strom.runtime import StreamingExecutor, run_streaming

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCHEMA = pl.Schema({
    "ts": pl.Int64(),
    "k": pl.String(),
    "g": pl.Int64(),
    "v": pl.Int64(),
    "f": pl.Float64(),
    "day": pl.Date(),
    "amount": pl.Decimal(10, 2),
})  # fmt: skip
Parts = list[list[list[dict[str, Any]]]]  # partitions of batches of rows

rows = st.fixed_dictionaries({
    "ts": st.integers(0, 5_000),
    "k": st.sampled_from(["a", "b", "c", None]),
    "g": st.integers(0, 2),
    "v": st.none() | st.integers(-50, 50),
    "f": st.none() | st.floats(-100, 100, allow_nan=False, width=32),
    "day": st.none() | st.dates(dt.date(2024, 1, 1), dt.date(2024, 1, 20)),
    "amount": st.none() | st.decimals(-1000, 1000, places=2, allow_nan=False),
})  # fmt: skip
partitions = st.lists(st.lists(st.lists(rows, max_size=6), max_size=4), min_size=1, max_size=3)


def _table(parts: Parts) -> pl.DataFrame:
    """Every row with its order key: (event time, partition, position in the partition)."""
    out = []
    for p, batches in enumerate(parts):
        seq = 0
        for batch in batches:
            for r in batch:
                out.append({**r, "part": p, "seq": seq})
                seq += 1
    return pl.DataFrame(out, schema={**SCHEMA, "part": pl.Int64(), "seq": pl.Int64()}, orient="row")


def _sql(sql: str, **tables: pl.DataFrame) -> pl.DataFrame:
    con = duckdb.connect()
    for name, frame in tables.items():
        con.register(name, frame.to_arrow())
    result = pl.from_arrow(con.sql(sql).to_arrow_table())
    assert isinstance(result, pl.DataFrame)
    return result


# -- keyed aggregation ----------------------------------------------------------------------------

AGGS = (
    agg.count(),
    agg.count("v"),
    agg.sum("v"),
    agg.mean("f"),
    agg.min("v"),
    agg.max("f"),
    agg.min("day"),
    agg.max("amount"),
    agg.sum("amount"),
    agg.first("v"),
    agg.last("day"),
    agg.var("v"),
    agg.std("f"),
    agg.count_distinct("day"),
)
DUCKDB_AGGS = """
    count(*) AS count, count(v) AS count_v, sum(v) AS sum_v, avg(f) AS mean_f, min(v) AS min_v,
    max(f) AS max_f, min(day) AS min_day, max(amount) AS max_amount,
    sum(amount) AS sum_amount,
    first(v ORDER BY ts, part, seq) AS first_v, last(day ORDER BY ts, part, seq) AS last_day,
    var_samp(v) AS var_v, stddev_samp(f) AS std_f, count(DISTINCT day) AS count_distinct_day
"""


def _keyed(parts: Parts, sink: MemorySink, keys: tuple[str, ...] = ("k", "g")) -> Pipeline:
    p = Pipeline()
    source = MemorySource(parts, schema=SCHEMA)
    p.source(source, timestamp="ts").key_by(*keys).agg(*AGGS).sink(sink)
    return p


def _close(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert_frame_equal(actual, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


@SETTINGS
@given(partitions)
def test_bounded_keyed_agg_equals_duckdb_group_by(parts: Parts) -> None:
    run_bounded(_keyed(parts, out := MemorySink()))
    table = _table(parts)
    got = out.to_frame() if out.batches else None
    if table.height == 0:
        assert got is None
        return
    assert got is not None
    assert got.columns[:2] == ["k", "g"] and got.columns[-1] == "is_update"
    assert not got["is_update"].any()
    expected = _sql(
        f"SELECT k, g, {DUCKDB_AGGS} FROM t GROUP BY k, g ORDER BY k NULLS FIRST, g", t=table
    )
    _close(got.drop("is_update"), expected.cast(got.drop("is_update").schema))  # type: ignore[arg-type]
    assert got.schema["max_amount"] == pl.Decimal(10, 2)  # Decimal and Date flow through
    assert got.schema["sum_amount"] == pl.Decimal(38, 2)  # exact, as in SQL
    assert got.schema["min_day"] == pl.Date()


@SETTINGS
@given(partitions)
def test_streaming_keyed_agg_final_table_equals_the_bounded_group_by(parts: Parts) -> None:
    run_bounded(_keyed(parts, bounded := MemorySink()))
    executor = run_streaming(_keyed(parts, streamed := MemorySink()))
    if not bounded.batches:
        assert not streamed.batches
        return
    updates = streamed.to_frame()
    # a key's first row is an insert, every later one an update
    seen: set[tuple[Any, ...]] = set()
    for key, update in zip(
        updates.select("k", "g").iter_rows(), updates["is_update"].to_list(), strict=True
    ):
        assert update == (key in seen)
        seen.add(key)
    final = (
        updates.unique(["k", "g"], keep="last", maintain_order=True)
        .with_columns(is_update=False)
        .sort("k", "g", nulls_last=False)
    )
    expected = bounded.to_frame()
    exact = [c for c in expected.columns if c not in ("var_v", "std_f", "mean_f")]
    assert_frame_equal(final.select(exact), expected.select(exact))  # first/last, types: exact
    _close(final, expected)
    (op,) = executor.stateful_operators().values()
    assert op.state_size() == expected.height


@SETTINGS
@given(partitions)
def test_an_aggregation_over_the_whole_stream_equals_sql_without_group_by(parts: Parts) -> None:
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        p.source(MemorySource(parts, schema=SCHEMA), timestamp="ts").agg(*AGGS).sink(sink)
        return p

    run_bounded(build(bounded := MemorySink()))
    run_streaming(build(streamed := MemorySink()))
    table = _table(parts)
    if table.height == 0:  # unlike SQL, no row at all
        assert not bounded.batches and not streamed.batches
        return
    got = bounded.to_frame()
    assert got.columns[-1] == "is_update" and got.height == 1 and not got["is_update"].any()
    expected = _sql(f"SELECT {DUCKDB_AGGS} FROM t", t=table)
    _close(got.drop("is_update"), expected.cast(got.drop("is_update").schema))  # type: ignore[arg-type]
    # streaming: one row per micro-batch that had rows, every one after the first an update,
    # the last one the bounded row
    updates = streamed.to_frame()
    assert updates["is_update"].to_list() == [False] + [True] * (updates.height - 1)
    _close(updates.tail(1).with_columns(is_update=False), got)


KEY_SCHEMA = pl.Schema({
    "x": pl.Float64(),
    "day": pl.Date(),
    "amount": pl.Decimal(6, 2),
    "flag": pl.Boolean(),
    "at": pl.Datetime("us"),
    "v": pl.Int64(),
})  # fmt: skip
key_rows = st.fixed_dictionaries({
    "x": st.none() | st.sampled_from([0.0, -0.0, 1.5, float("nan")]),
    "day": st.none() | st.sampled_from([dt.date(2024, 1, 1), dt.date(1969, 12, 31)]),
    "amount": st.none() | st.sampled_from(["1.50", "-2.00"]).map(Decimal),
    "flag": st.none() | st.booleans(),
    "at": st.sampled_from([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 0, 1)]),
    "v": st.integers(-5, 5),
})  # fmt: skip


@SETTINGS
@given(
    st.lists(st.lists(st.lists(key_rows, max_size=5), max_size=4), min_size=1, max_size=2),
    st.sampled_from([("x",), ("day", "amount"), ("flag", "at"), ("x", "flag")]),
)
def test_keys_of_every_type_give_one_row_each_in_both_runtimes(
    parts: Parts, keys: tuple[str, ...]
) -> None:
    """Float keys (NaN is one key, -0.0 equals 0.0), dates, decimals, Booleans, datetimes."""

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        source = MemorySource(parts, schema=KEY_SCHEMA)
        p.source(source).key_by(*keys).agg(agg.count(), agg.sum("v")).sink(sink)
        return p

    run_bounded(build(bounded := MemorySink()))
    run_streaming(build(streamed := MemorySink()))
    if not bounded.batches:
        assert not streamed.batches
        return
    expected = bounded.to_frame()
    final = streamed.to_frame().unique(keys, keep="last", maintain_order=True)
    final = final.with_columns(is_update=False).sort(keys, nulls_last=False)
    assert final.height == expected.height  # no key split in two (NaN, -0.0)
    assert_frame_equal(final, expected)


def test_keyed_agg_without_event_time_orders_first_and_last_by_arrival() -> None:
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        parts = [[[{"k": "a", "v": 1}, {"k": "b", "v": 2}], [{"k": "a", "v": 3}]]]
        p.source(MemorySource(parts)).key_by("k").agg(agg.first("v"), agg.last("v")).sink(sink)
        return p

    run_bounded(build(bounded := MemorySink()))
    run_streaming(build(streamed := MemorySink()))
    assert bounded.to_frame().rows() == [("a", 1, 3, False), ("b", 2, 2, False)]
    assert streamed.to_frame().rows() == [
        ("a", 1, 1, False),
        ("b", 2, 2, False),
        ("a", 1, 3, True),
    ]


def test_an_upsert_sink_keyed_by_the_keys_holds_the_bounded_result(tmp_path: Path) -> None:
    parts = [
        [[{"ts": t, "user": f"u{t % 7}", "spent": t % 13} for t in range(i, i + 50)]]
        for i in range(0, 300, 50)
    ]

    def build(sink: Any) -> Pipeline:
        p = Pipeline()
        events = p.source(MemorySource(parts), timestamp="ts")
        events.key_by("user").agg(agg.count(), agg.sum("spent"), agg.last("spent")).sink(sink)
        return p

    database = tmp_path / "features.db"
    run_streaming(build(SQLiteSink(database, "features", mode="upsert", key=["user"])))
    run_bounded(build(bounded := MemorySink()))
    with sqlite3.connect(database) as con:
        table = con.execute(
            "SELECT user, count, sum_spent, last_spent FROM features ORDER BY user"
        ).fetchall()
    assert table == bounded.to_frame().drop("is_update").rows()


def test_keyed_agg_metrics_count_its_keys() -> None:
    p = Pipeline()
    rows = [{"k": "ab"[i % 2], "v": i} for i in range(6)]
    p.source(MemorySource([[rows[:3], rows[3:]]])).key_by("k").agg(agg.sum("v")).sink(MemorySink())
    executor = run_streaming(p)
    metrics = executor.metrics()["2:KeyedAgg"]
    assert (metrics.rows_in, metrics.rows_out, metrics.state_size) == (6, 4, 2)


# -- joins ----------------------------------------------------------------------------------------

left_rows = st.lists(
    st.fixed_dictionaries(
        {
            "k": st.none() | st.integers(0, 3),
            "day": st.sampled_from([dt.date(2024, 1, 1), dt.date(2024, 1, 2)]),
            "a": st.integers(0, 9),
        }
    ),
    max_size=12,
)
right_rows = st.lists(
    st.fixed_dictionaries(
        {
            "rk": st.none() | st.integers(0, 3),
            "day": st.sampled_from([dt.date(2024, 1, 1), dt.date(2024, 1, 2)]),
            "a": st.integers(0, 9),
            "price": st.none() | st.decimals(0, 99, places=2, allow_nan=False),
        }
    ),
    max_size=12,
)
LEFT = pl.Schema({"k": pl.Int64(), "day": pl.Date(), "a": pl.Int64()})
RIGHT = pl.Schema({"rk": pl.Int64(), "day": pl.Date(), "a": pl.Int64(), "price": pl.Decimal(4, 2)})
_ON = "ON l.k = r.rk AND l.day = r.day"
_PAIRS = "SELECT l.*, r.rk, r.a AS a_right, r.price FROM l"
DUCKDB_JOINS = {
    "inner": f"{_PAIRS} JOIN r {_ON}",
    "left": f"{_PAIRS} LEFT JOIN r {_ON}",
    "semi": f"SELECT l.* FROM l SEMI JOIN r {_ON}",
    "anti": f"SELECT l.* FROM l ANTI JOIN r {_ON}",
}


def _halves(rows: list[dict[str, Any]]) -> list[list[list[dict[str, Any]]]]:
    """The rows as two partitions (so joins see several)."""
    return [[rows[: len(rows) // 2]], [rows[len(rows) // 2 :]]]


@SETTINGS
@given(left_rows, right_rows, st.sampled_from(["inner", "left", "semi", "anti"]))
def test_bounded_joins_equal_duckdb(
    left: list[dict[str, Any]], right: list[dict[str, Any]], how: Any
) -> None:
    p = Pipeline()
    lhs = p.source(MemorySource(_halves(left), schema=LEFT))
    rhs = p.source(MemorySource(_halves(right), schema=RIGHT))
    lhs.join(rhs, left_on=["k", "day"], right_on=["rk", "day"], how=how).sink(out := MemorySink())
    run_bounded(p)
    expected = _sql(
        DUCKDB_JOINS[how],
        l=pl.DataFrame(left, schema=LEFT),
        r=pl.DataFrame(right, schema=RIGHT),
    )
    got = out.to_frame() if out.batches else pl.DataFrame(schema=expected.schema)
    assert got.columns == expected.columns
    assert got.schema == expected.schema
    assert_frame_equal(got.sort(pl.all()), expected.sort(pl.all()))


def test_join_output_names_types_and_order() -> None:
    p = Pipeline()
    users = p.source(MemorySource([[{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]]))
    orders = p.source(MemorySource([[{"id": 2, "name": "o1"}, {"id": 1, "name": "o2"}]]))
    users.join(orders, on="id").sink(out := MemorySink())
    run_bounded(p)
    assert sorted(out.to_frame().rows()) == [(1, "x", "o2"), (2, "y", "o1")]
    assert out.to_frame().columns == ["id", "name", "name_right"]


# -- sort, top-k, distinct ------------------------------------------------------------------------


@SETTINGS
@given(partitions, st.booleans(), st.integers(0, 8))
def test_sort_and_top_k_equal_duckdb_and_keep_ties_in_input_order(
    parts: Parts, descending: bool, k: int
) -> None:
    p = Pipeline()
    events = p.source(MemorySource(parts, schema=SCHEMA))
    events.sort(["amount", "day"], descending=descending).sink(ordered := MemorySink())
    events.top_k(k, by="v").sink(top := MemorySink())
    run_bounded(p)
    table = _table(parts)
    if table.height == 0:
        assert not ordered.batches and not top.batches
        return
    direction = "DESC" if descending else "ASC"
    expected = _sql(
        f"SELECT * EXCLUDE (part, seq) FROM t ORDER BY amount {direction} NULLS FIRST, "
        f"day {direction} NULLS FIRST, part, seq",
        t=table,
    )
    assert_frame_equal(ordered.to_frame(), expected.cast(SCHEMA))  # type: ignore[arg-type]
    expected_top = _sql(
        f"SELECT * EXCLUDE (part, seq) FROM t ORDER BY v DESC NULLS LAST, part, seq LIMIT {k}",
        t=table,
    )
    got_top = top.to_frame() if top.batches else pl.DataFrame(schema=SCHEMA)
    assert_frame_equal(got_top, expected_top.cast(SCHEMA))  # type: ignore[arg-type]


@SETTINGS
@given(partitions)
def test_distinct_equals_duckdb(parts: Parts) -> None:
    p = Pipeline()
    events = p.source(MemorySource(parts, schema=SCHEMA)).select("k", "g", "day")
    events.distinct().sink(whole := MemorySink())
    events.distinct("k").sink(first := MemorySink())
    run_bounded(p)
    table = _table(parts)
    if table.height == 0:
        assert not whole.batches and not first.batches
        return
    expected = _sql(
        "SELECT k, g, day FROM t QUALIFY row_number() OVER "
        "(PARTITION BY k, g, day ORDER BY part, seq) = 1 ORDER BY part, seq",
        t=table,
    )
    assert_frame_equal(whole.to_frame(), expected)
    assert whole.to_frame().height == _sql("SELECT DISTINCT k, g, day FROM t", t=table).height
    expected_first = _sql(
        "SELECT k, g, day FROM t QUALIFY row_number() OVER (PARTITION BY k ORDER BY part, seq) "
        "= 1 ORDER BY part, seq",
        t=table,
    )
    assert_frame_equal(first.to_frame(), expected_first)


# -- what the streaming runtime refuses, and bad plans --------------------------------------------


def _two_sources() -> tuple[Pipeline, Any, Any]:
    p = Pipeline()
    left = p.source(MemorySource([[{"k": 1, "ts": 0}]]), timestamp="ts")
    right = p.source(MemorySource([[{"k": 1, "x": 2}]]))
    return p, left, right


def test_the_streaming_runtime_refuses_unbounded_joins_naming_the_alternatives() -> None:
    p, left, right = _two_sources()
    left.join(right, on="k").sink(MemorySink())
    with pytest.raises(PlanError, match=r"streaming join\(\) needs ttl_ms=.*interval_join.*"
                                        r"lookup_join"):  # fmt: skip
        StreamingExecutor(p)
    run_bounded(p)  # bounded runs need no TTL


@pytest.mark.parametrize("method", ["sort", "top_k", "distinct"])
def test_the_streaming_runtime_refuses_sort_and_distinct(method: str) -> None:
    p, left, _ = _two_sources()
    {
        "sort": lambda: left.sort("k"),
        "top_k": lambda: left.top_k(1, by="k"),
        "distinct": lambda: left.distinct("k"),
    }[method]().sink(MemorySink())
    with pytest.raises(PlanError, match="bounded runs only"):
        StreamingExecutor(p)


def _plan_error(build: Any) -> str:
    p, left, right = _two_sources()
    build(left, right).sink(MemorySink())
    with pytest.raises(PlanError) as info:
        p.plan()
    return str(info.value)


def test_bad_plans_are_refused_naming_the_step() -> None:
    cases = {
        "needs at least one aggregation": lambda a, b: a.key_by("k").agg(),
        "which is a key column": lambda a, b: a.key_by("k").agg(agg.max("ts", name="k")),
        "one of the result's own columns": lambda a, b: a.key_by("k").agg(
            agg.count(name="is_update")
        ),
        "aggregated column 'nope' does not exist": lambda a, b: a.key_by("k").agg(agg.sum("nope")),
        "left key 'k' is Int64 but right key 'x' is String": lambda a, b: a.join(
            b.with_columns(x=pl.lit("s")), left_on="k", right_on="x"
        ),
        "right key column 'missing' does not exist": lambda a, b: a.join(
            b, left_on="k", right_on="missing"
        ),
        "sort column 'zz' does not exist": lambda a, b: a.sort("zz"),
        "k must be a non-negative integer": lambda a, b: a.top_k(-1, by="k"),
        "distinct column 'zz' does not exist": lambda a, b: a.distinct("zz"),
    }
    for message, build in cases.items():
        assert message in _plan_error(build), message
    _, left, right = _two_sources()
    with pytest.raises(PlanError, match="how must be one of"):
        left.join(right, on="k", how="outer")
    with pytest.raises(PlanError, match="pass on=, or left_on= and right_on=, not both"):
        left.join(right, on="k", left_on="k")
