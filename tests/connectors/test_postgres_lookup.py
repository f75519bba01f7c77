"""PostgresTable against a real server: lookup joins, the TTL cache, types, lost connections."""

from __future__ import annotations

import datetime as dt
import decimal
import pickle
import socket

import polars as pl
import psycopg
import pytest
from postgres_server import PostgresServer

from strom.bounded import run_bounded
from strom.connectors import (
    GeneratorSource,
    MemorySink,
    MemorySource,
    PostgresConnectionError,
    PostgresTable,
)
from strom.pipeline import Pipeline, PlanError, Tumbling, agg
from strom.runtime import StreamingExecutor, run_streaming

EVENT = pl.Schema({"ts": pl.Int64(), "device": pl.String(), "temp": pl.Float64()})


def execute(dsn: str, sql: str, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql, params)


@pytest.fixture
def devices(postgres_dsn: str) -> PostgresTable:
    """``devices``: d0..d5 (site0/site1, max_temp 50 + i); d6..d8 are not in it."""
    execute(
        postgres_dsn, "CREATE TABLE devices (device text PRIMARY KEY, site text, max_temp real)"
    )
    for i in range(6):
        execute(
            postgres_dsn,
            "INSERT INTO devices VALUES (%s, %s, %s)",
            (f"d{i}", f"site{i % 2}", 50.0 + i),
        )
    return PostgresTable(postgres_dsn, "devices", key="device")


class CountingTable:
    """Wraps a table and records every lookup's keys."""

    def __init__(self, inner: PostgresTable) -> None:
        self.inner = inner
        self.key = inner.key
        self.calls: list[list[str]] = []

    def schema(self) -> pl.Schema | None:
        return self.inner.schema()

    def lookup(self, keys: pl.Series) -> pl.DataFrame:
        self.calls.append(sorted(keys.to_list()))
        return self.inner.lookup(keys)


def events(batches: int, per_batch: int) -> list[list[dict[str, object]]]:
    return [
        [
            {
                "ts": b * 1_000 + i,
                "device": f"d{(b * 3 + i * 5) % 9}" if i % 11 else None,
                "temp": float(i + b),
            }
            for i in range(per_batch)
        ]
        for b in range(batches)
    ]


def test_streaming_equals_bounded_with_missing_and_null_keys(devices: PostgresTable) -> None:
    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        joined = p.source(MemorySource([events(6, 40)], schema=EVENT), timestamp="ts").lookup_join(
            devices, on="device"
        )
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
    assert s.schema == pl.Schema({**EVENT, "site": pl.String(), "max_temp": pl.Float32()})
    assert s.equals(b)
    assert s.height == 6 * 40
    missing = s.filter(pl.col("device").is_in(["d6", "d7", "d8"]) | pl.col("device").is_null())
    assert missing.height > 0 and missing.get_column("site").null_count() == missing.height
    found = s.filter(pl.col("device").is_in([f"d{i}" for i in range(6)]))
    assert found.get_column("site").null_count() == 0
    assert found.filter(pl.col("device") == "d3").get_column("max_temp").unique().to_list() == [
        53.0
    ]
    devices.close()


def test_one_query_per_batch(devices: PostgresTable) -> None:
    table = CountingTable(devices)
    batches = [
        [{"ts": 1, "device": "d0", "temp": 1.0}, {"ts": 2, "device": "d1", "temp": 1.0}] * 3,
        [{"ts": 3, "device": "d0", "temp": 1.0}, {"ts": 4, "device": "zz", "temp": 1.0}],
        [{"ts": 5, "device": "zz", "temp": 1.0}],
    ]
    p = Pipeline()
    p.source(MemorySource([batches], schema=EVENT), timestamp="ts").lookup_join(
        table, on="device", columns=["site"], ttl_ms=60_000
    ).sink(sink := MemorySink())
    run_streaming(p, clock=lambda: 0.0)
    assert table.calls == [["d0", "d1"], ["zz"]]
    assert sink.to_frame().get_column("site").to_list() == [
        "site0", "site1", "site0", "site1", "site0", "site1", "site0", None, None,
    ]  # fmt: skip


def test_ttl_refresh_sees_database_changes_after_expiry(
    postgres_dsn: str, devices: PostgresTable
) -> None:
    now = [0.0]
    at = [0.0, 1_000.0, 59_999.0, 60_000.0, 60_500.0]

    def generate(_partition: int, i: int) -> pl.DataFrame:
        now[0] = at[i]
        if i == 1:  # the row changes (and a row is added) just before poll 1
            execute(postgres_dsn, "UPDATE devices SET site = 'moved' WHERE device = 'd0'")
            execute(postgres_dsn, "INSERT INTO devices VALUES ('new', 'fresh', 1)")
        return pl.DataFrame(
            {"ts": [i, i], "device": ["d0", "new"], "temp": [0.0, 0.0]}, schema=EVENT
        )

    sink = MemorySink()
    p = Pipeline()
    p.source(GeneratorSource(generate, batches=len(at), schema=EVENT), timestamp="ts").lookup_join(
        devices, on="device", columns=["site"], ttl_ms=60_000
    ).sink(sink)
    executor = StreamingExecutor(p, clock=lambda: now[0])
    executor.run()
    out = sink.to_frame().sort("ts", "device")
    assert out.filter(pl.col("device") == "d0").get_column("site").to_list() == [
        "site0", "site0", "site0", "moved", "moved",
    ]  # fmt: skip
    # "not in the table" is cached too: the new row shows once that entry expires
    assert out.filter(pl.col("device") == "new").get_column("site").to_list() == [
        None, None, None, "fresh", "fresh",
    ]  # fmt: skip
    (lookup,) = [m for m in executor.metrics().values() if "queries" in m.detail]
    assert lookup.detail["queries"] == 2
    devices.close()


def test_columns_schema_and_missing_table(postgres_dsn: str, devices: PostgresTable) -> None:
    only_site = PostgresTable(postgres_dsn, "devices", key="device", columns=["site"])
    assert only_site.schema() == pl.Schema({"device": pl.String(), "site": pl.String()})
    found = only_site.lookup(pl.Series(["d1", "nope", None]))
    assert found.rows() == [("d1", "site1")]
    with pytest.raises(ValueError, match=r"no column\(s\) \['zone'\]"):
        PostgresTable(postgres_dsn, "devices", key="device", columns=["zone"]).schema()
    with pytest.raises(ValueError, match="no key column 'id'"):
        PostgresTable(postgres_dsn, "devices", key="id").schema()

    absent = PostgresTable(postgres_dsn, "absent", key="k")
    assert absent.schema() is None
    with pytest.raises(LookupError, match="no such table"):
        absent.lookup(pl.Series(["a"]))
    p = Pipeline()
    src = p.source(MemorySource([[]], schema=EVENT), timestamp="ts")
    with pytest.raises(PlanError, match="pass columns"):
        src.lookup_join(absent, on="device")
    # created later: found at the first lookup
    execute(postgres_dsn, "CREATE TABLE absent (k text PRIMARY KEY, v int)")
    execute(postgres_dsn, "INSERT INTO absent VALUES ('a', 1)")
    assert absent.lookup(pl.Series(["a"])).rows() == [("a", 1)]
    for t in (only_site, absent, devices):
        t.close()


def test_types_and_key_casts(postgres_dsn: str) -> None:
    execute(
        postgres_dsn,
        "CREATE TABLE things (id uuid PRIMARY KEY, n integer, big numeric, price numeric(10, 2), "
        "at timestamptz, day date, doc jsonb, raw bytea, ok boolean, took interval, "
        "tags text[], name varchar(10))",
    )
    uid = "0b7c2f5e-4b9a-4d0a-9f53-5d2a8d3c9e11"
    execute(
        postgres_dsn,
        "INSERT INTO things VALUES (%s, 7, 1.5, 12.34, '2024-01-02 03:04:05+02', '2024-01-02', "
        "'{\"a\": [1, 2]}', '\\x00ff', true, '90 seconds', '{x,y}', 'ten')",
        (uid,),
    )
    with PostgresTable(postgres_dsn, "things", key="id") as table:
        assert table.schema() == pl.Schema(
            {
                "id": pl.String(), "n": pl.Int32(), "big": pl.Float64(),
                "price": pl.Decimal(10, 2), "at": pl.Datetime("us", "UTC"), "day": pl.Date(),
                "doc": pl.String(), "raw": pl.Binary(), "ok": pl.Boolean(),
                "took": pl.Duration("us"), "tags": pl.String(), "name": pl.String(),
            }
        )  # fmt: skip
        found = table.lookup(pl.Series([uid, "00000000-0000-0000-0000-000000000000"]))
        assert found.rows() == [
            (
                uid, 7, 1.5, decimal.Decimal("12.34"),
                dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.UTC), dt.date(2024, 1, 2),
                '{"a": [1, 2]}', b"\x00\xff", True, dt.timedelta(seconds=90), "{x,y}", "ten",
            )
        ]  # fmt: skip
    # an integer key looked up with keys of another type: cast to the column's type
    with PostgresTable(postgres_dsn, "things", key="n", columns=["name"]) as by_n:
        assert by_n.lookup(pl.Series(["7", "8"])).rows() == [(7, "ten")]
        assert by_n.lookup(pl.Series([7], dtype=pl.Int64)).rows() == [(7, "ten")]
        assert by_n.lookup(pl.Series([], dtype=pl.Int64)).height == 0


def test_lost_connection_reconnects(
    postgres_server: PostgresServer, devices: PostgresTable
) -> None:
    assert devices.lookup(pl.Series(["d1"])).height == 1
    with postgres_server.connect() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    assert devices.lookup(pl.Series(["d2"])).rows() == [("d2", "site0", 52.0)]
    devices.close()


def test_connection_refused_names_the_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    table = PostgresTable(f"host=127.0.0.1 port={port} dbname=db password=secret", "t", key="k")
    with pytest.raises(PostgresConnectionError, match=f"127.0.0.1:{port}/db") as refused:
        table.lookup(pl.Series(["a"]))
    assert "secret" not in str(refused.value) and "secret" not in repr(table)


def test_a_table_travels_to_another_process_without_its_connection(
    devices: PostgresTable,
) -> None:
    assert devices.lookup(pl.Series(["d1"])).height == 1  # connected
    copy = pickle.loads(pickle.dumps(devices))
    assert copy.lookup(pl.Series(["d4"])).rows() == [("d4", "site0", 54.0)]
    assert devices.lookup(pl.Series(["d5"])).height == 1
    copy.close()
    devices.close()
