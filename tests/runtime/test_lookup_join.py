"""Lookup joins: streaming == bounded, one query per batch, TTL refresh, missing keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl
import pytest

from strom.bounded import run_bounded
from strom.connectors import GeneratorSource, MemorySink, MemorySource, SQLiteTable
from strom.pipeline import Pipeline, PlanError, Tumbling, agg
from strom.runtime import StreamingExecutor, run_streaming

EVENT = pl.Schema({"ts": pl.Int64(), "device": pl.String(), "temp": pl.Float64()})


def make_table(path: Path, rows: list[tuple[str, str, float]]) -> SQLiteTable:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE devices (device TEXT PRIMARY KEY, site TEXT, max_temp REAL)")
        conn.executemany("INSERT INTO devices VALUES (?, ?, ?)", rows)
    conn.close()
    return SQLiteTable(path, "devices", key="device")


def set_site(path: Path, device: str, site: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE devices SET site = ? WHERE device = ?", (site, device))
    conn.close()


class CountingTable:
    """Wraps a table and records every lookup's keys."""

    def __init__(self, inner: SQLiteTable) -> None:
        self.inner = inner
        self.key = inner.key
        self.calls: list[list[str]] = []

    def schema(self) -> pl.Schema | None:
        return self.inner.schema()

    def lookup(self, keys: pl.Series) -> pl.DataFrame:
        self.calls.append(sorted(keys.to_list()))
        return self.inner.lookup(keys)


def events(seed: int, batches: int, per_batch: int) -> list[list[dict[str, object]]]:
    out = []
    for b in range(batches):
        out.append(
            [
                {
                    "ts": b * 1_000 + i,
                    "device": f"d{(seed * 7 + b * 3 + i * 5) % 9}" if i % 11 else None,
                    "temp": float(i + b),
                }
                for i in range(per_batch)
            ]
        )
    return out


def test_streaming_equals_bounded_with_missing_and_null_keys(tmp_path: Path) -> None:
    # d0..d5 are in the table, d6..d8 are not; every 11th row has a null device
    table = make_table(tmp_path / "t.db", [(f"d{i}", f"site{i % 2}", 50.0 + i) for i in range(6)])

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        src = MemorySource([events(3, 6, 40)], schema=EVENT)
        joined = p.source(src, timestamp="ts").lookup_join(table, on="device")
        joined.sink(sink)
        (
            joined.filter(pl.col("site").is_not_null())
            .key_by("device", "site")
            .window(Tumbling(2_000))
            .agg(agg.count(), agg.max("max_temp"))
            .sink(MemorySink())
        )
        return p

    streamed, bounded = MemorySink(), MemorySink()
    run_streaming(build(streamed))
    run_bounded(build(bounded))
    s, b = streamed.to_frame(), bounded.to_frame()
    assert s.schema == pl.Schema({**EVENT, "site": pl.String(), "max_temp": pl.Float64()})
    assert s.equals(b)  # same rows, same order (one partition)
    assert s.height == 6 * 40
    missing = s.filter(pl.col("device").is_in(["d6", "d7", "d8"]) | pl.col("device").is_null())
    assert missing.height > 0
    assert missing.get_column("site").null_count() == missing.height
    assert missing.get_column("max_temp").null_count() == missing.height
    found = s.filter(pl.col("device").is_in([f"d{i}" for i in range(6)]))
    assert found.get_column("site").null_count() == 0


def test_one_query_per_batch_for_its_distinct_keys(tmp_path: Path) -> None:
    table = CountingTable(make_table(tmp_path / "t.db", [("a", "s1", 1.0), ("b", "s2", 2.0)]))
    batches = [
        [{"ts": 1, "device": "a", "temp": 1.0}, {"ts": 2, "device": "b", "temp": 1.0}] * 3,
        [{"ts": 3, "device": "a", "temp": 1.0}, {"ts": 4, "device": "c", "temp": 1.0}],
        [{"ts": 5, "device": "c", "temp": 1.0}],
    ]
    p = Pipeline()
    p.source(MemorySource([batches], schema=EVENT), timestamp="ts").lookup_join(
        table, on="device", columns=["site"], ttl_ms=60_000
    ).sink(MemorySink())
    run_streaming(p, clock=lambda: 0.0)
    # batch 1 asks for a and b once; batch 2 only for c (a is cached); batch 3 nothing:
    # "c is missing" is cached too
    assert table.calls == [["a", "b"], ["c"]]

    table.calls.clear()
    p2 = Pipeline()
    p2.source(MemorySource([batches], schema=EVENT), timestamp="ts").lookup_join(
        table, on="device", columns=["site"]
    ).sink(MemorySink())
    run_bounded(p2)
    assert table.calls == [["a", "b", "c"]]


def test_ttl_refresh_after_expiry_not_before(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    table = make_table(path, [("a", "old", 1.0)])
    now = [0.0]
    # poll i happens at processing time ``at[i]``; the table row changes just before poll 1
    at = [0.0, 1_000.0, 59_999.0, 60_000.0, 60_500.0]

    def generate(_partition: int, i: int) -> pl.DataFrame:
        now[0] = at[i]
        if i == 1:
            set_site(path, "a", "new")
        return pl.DataFrame({"ts": [i], "device": ["a"], "temp": [0.0]}, schema=EVENT)

    sink = MemorySink()
    p = Pipeline()
    p.source(GeneratorSource(generate, batches=len(at), schema=EVENT), timestamp="ts").lookup_join(
        table, on="device", columns=["site"], ttl_ms=60_000
    ).sink(sink)
    executor = StreamingExecutor(p, clock=lambda: now[0])
    executor.run()
    sites = sink.to_frame().sort("ts").get_column("site").to_list()
    # fetched at 0: cached until 60 000 (exclusive); refetched at 60 000, then cached again
    assert sites == ["old", "old", "old", "new", "new"]
    (lookup,) = [m for m in executor.metrics().values() if "queries" in m.detail]
    assert lookup.detail["queries"] == 2


def test_validation(tmp_path: Path) -> None:
    table = make_table(tmp_path / "t.db", [("a", "s", 1.0)])
    p = Pipeline()
    src = p.source(MemorySource([[]], schema=EVENT), timestamp="ts")
    src.lookup_join(table, on="nope").sink(MemorySink())
    with pytest.raises(PlanError, match="join column on= 'nope' does not exist"):
        p.plan()
    p = Pipeline()
    src = p.source(MemorySource([[]], schema=EVENT), timestamp="ts")
    src.lookup_join(table, on="device", columns=["zone"]).sink(MemorySink())
    with pytest.raises(PlanError, match="table column 'zone' does not exist"):
        p.plan()
    p = Pipeline()
    src = p.source(MemorySource([[]], schema=EVENT), timestamp="ts")
    src.with_columns(site=pl.lit("x")).lookup_join(table, on="device").sink(MemorySink())
    with pytest.raises(PlanError, match="already exist in the stream"):
        p.plan()
    p = Pipeline()
    src = p.source(MemorySource([[]], schema=EVENT), timestamp="ts")
    src.lookup_join(table, on="device", ttl_ms=-1).sink(MemorySink())
    with pytest.raises(PlanError, match="ttl_ms"):
        p.plan()
    with pytest.raises(PlanError, match="pass columns"):
        src.lookup_join(SQLiteTable(tmp_path / "none.db", "devices", key="device"), on="device")


def test_plan_schema_known_from_table(tmp_path: Path) -> None:
    table = make_table(tmp_path / "t.db", [("a", "s", 1.0)])
    p = Pipeline()
    joined = p.source(MemorySource([[]], schema=EVENT), timestamp="ts").lookup_join(
        table, on="device", columns=["max_temp"]
    )
    joined.sink(MemorySink())
    plan = p.plan()
    assert plan.schemas[joined.node] == pl.Schema({**EVENT, "max_temp": pl.Float64()})
    assert plan.timestamps[joined.node] == "ts"
