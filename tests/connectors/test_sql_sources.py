"""SQL tables as bounded sources (``p.source(SQLiteTable(...))``): every row in key order, in
batches, on every backend that runs them; one snapshot per pass; clear errors for a missing
database, table or column. (Positions and seeks: the shared source contract suite.)"""

from __future__ import annotations

import datetime as dt
import decimal
import sqlite3
from pathlib import Path

import polars as pl
import psycopg
import pytest

from strom import MemorySink, MemorySource, Pipeline, PostgresTable, SQLiteTable, run_bounded
from strom.connectors.sql.table_source import TablePartition
from strom.engine.contracts import END_OF_PARTITION, BoundedSource
from strom.runtime import run_streaming


def sqlite_devices(path: Path, n: int = 50) -> SQLiteTable:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE devices (device TEXT PRIMARY KEY, site TEXT, max_temp REAL)")
        rows = [(f"d{i:03d}", f"site{i % 3}", 40.0 + i if i % 7 else None) for i in range(n)]
        conn.executemany("INSERT INTO devices VALUES (?, ?, ?)", reversed(rows))
    conn.close()
    return SQLiteTable(path, "devices", key="device", batch_rows=8)


ROWS = [{"ts": i, "device": f"d{i % 60:03d}", "temp": float(i % 45)} for i in range(600)]


def readings() -> MemorySource:
    return MemorySource([[pl.DataFrame(ROWS[:300])], [pl.DataFrame(ROWS[300:])]])


@pytest.mark.parametrize("runner", [run_bounded, run_streaming])
def test_a_sqlite_table_joined_with_events(tmp_path: Path, runner: object) -> None:
    table = sqlite_devices(tmp_path / "db.sqlite")
    assert isinstance(table, BoundedSource)
    p = Pipeline()
    events = p.source(readings())
    devices = p.source(table)
    # a streaming join holds its rows for ttl_ms; the bounded one needs none
    ttl = None if runner is run_bounded else 10**9
    events.join(devices, on="device", ttl_ms=ttl).sink(sink := MemorySink())
    runner(p)  # type: ignore[operator]
    whole = table.scan_partition(0).collect()
    assert whole["device"].to_list() == sorted(whole["device"].to_list())  # key order
    assert whole.schema == pl.Schema(
        {"device": pl.String(), "site": pl.String(), "max_temp": pl.Float64()}
    )
    got = sink.to_frame().sort("ts")
    assert got.height == 500  # d050..d059 are not in the table
    assert got.equals(pl.DataFrame(ROWS).join(whole, on="device").sort("ts").select(got.columns))


def test_batches_are_batch_rows_long_and_the_pass_ends(tmp_path: Path) -> None:
    table = sqlite_devices(tmp_path / "db.sqlite", n=20)
    reader = table.open_partition(0)
    sizes = []
    while (batch := reader.poll()) is not END_OF_PARTITION:
        assert isinstance(batch, pl.DataFrame)
        sizes.append(batch.height)
    assert sizes == [8, 8, 4] and reader.position() == {"rows": 20}
    assert reader.poll() is END_OF_PARTITION


def test_columns_limit_what_is_read(tmp_path: Path) -> None:
    table = sqlite_devices(tmp_path / "db.sqlite", n=5)
    narrow = SQLiteTable(table.path, "devices", key="device", columns=["site"])
    assert narrow.scan_partition(0).collect().columns == ["device", "site"]


def test_missing_database_table_or_column_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no database at"):
        SQLiteTable(tmp_path / "none.sqlite", "t", key="k").open_partition(0).poll()
    table = sqlite_devices(tmp_path / "db.sqlite", n=3)
    with pytest.raises(FileNotFoundError, match="no such table"):
        SQLiteTable(table.path, "nope", key="k").scan_partition(0)
    with pytest.raises(ValueError, match=r"no column\(s\) \['colour'\]"):
        SQLiteTable(table.path, "devices", key="device", columns=["colour"]).scan_partition(0)
    with pytest.raises(IndexError, match="one partition"):
        table.open_partition(1)
    with pytest.raises(ValueError, match="batch_rows"):
        SQLiteTable(table.path, "devices", key="device", batch_rows=0)


def test_an_empty_table_is_an_empty_frame_of_its_schema(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute("CREATE TABLE t (k INTEGER, v TEXT)")
    conn.close()
    frame = SQLiteTable(tmp_path / "db.sqlite", "t", key="k").scan_partition(0).collect()
    assert frame.height == 0 and frame.schema == pl.Schema({"k": pl.Int64(), "v": pl.String()})


def execute(dsn: str, sql: str, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql, params)


def test_a_postgres_table_keeps_its_types(postgres_dsn: str) -> None:
    execute(
        postgres_dsn,
        "CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric(12, 2), opened date, "
        "seen timestamptz, name text)",
    )
    for i in (3, 1, 2):
        execute(
            postgres_dsn,
            "INSERT INTO accounts VALUES (%s, %s, %s, %s, %s)",
            (i, decimal.Decimal(f"{i}00.25"), dt.date(2026, 1, i),
             dt.datetime(2026, 1, i, 12, tzinfo=dt.UTC), f"n{i}"),
        )  # fmt: skip
    with PostgresTable(postgres_dsn, "accounts", key="id") as table:
        frame = table.scan_partition(0).collect()
    assert frame["id"].to_list() == [1, 2, 3]
    assert frame["balance"].to_list() == [decimal.Decimal(f"{i}00.25") for i in (1, 2, 3)]
    assert frame.schema["balance"] == pl.Decimal(12, 2)
    assert frame["opened"].to_list() == [dt.date(2026, 1, i) for i in (1, 2, 3)]
    p = Pipeline()
    p.source(PostgresTable(postgres_dsn, "accounts", key="id")).filter(
        pl.col("balance") > decimal.Decimal("150")
    ).sink(sink := MemorySink())
    run_bounded(p)
    assert sink.to_frame()["name"].to_list() == ["n2", "n3"]


def test_a_postgres_pass_reads_one_snapshot(postgres_dsn: str) -> None:
    """Rows committed while a pass is under way are not in it; the next pass has them."""
    execute(postgres_dsn, "CREATE TABLE growing (id bigint, v text)")
    execute(postgres_dsn, "INSERT INTO growing SELECT g, 'x' FROM generate_series(1, 30) g")
    table = PostgresTable(postgres_dsn, "growing", key="id", batch_rows=10)
    reader: TablePartition = table.open_partition(0)
    first = reader.poll()
    assert isinstance(first, pl.DataFrame) and first["id"].to_list() == list(range(1, 11))
    execute(postgres_dsn, "INSERT INTO growing SELECT g, 'y' FROM generate_series(0, 40) g")
    seen = first.height
    while isinstance(batch := reader.poll(), pl.DataFrame):
        assert set(batch["v"]) == {"x"}
        seen += batch.height
    assert seen == 30
    assert table.scan_partition(0).collect().height == 71
    table.close()


def test_a_missing_postgres_table_is_a_clear_error(postgres_dsn: str) -> None:
    with (
        PostgresTable(postgres_dsn, "absent", key="id") as table,
        pytest.raises(LookupError, match="no such table"),
    ):
        table.open_partition(0).poll()


def test_a_value_of_another_type_is_a_clear_error_not_a_truncation(tmp_path: Path) -> None:
    """SQLite types values, not columns: 2.5 or 'x' in an INTEGER column must not become 2 or
    null in an Int64 column."""
    for bad in (2.5, "x", b"\x00"):
        path = tmp_path / f"db-{type(bad).__name__}.sqlite"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (k INTEGER, n INTEGER, r REAL)")
            conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, 1, 1), (2, bad, 2.5)])
        conn.close()
        with pytest.raises(ValueError, match=r"rows 0\.\.1 .* do not fit .*not Int64"):
            SQLiteTable(path, "t", key="k").scan_partition(0)
    path = tmp_path / "fine.sqlite"
    with sqlite3.connect(path) as conn:  # integers in a REAL column are numbers all the same
        conn.execute("CREATE TABLE t (k INTEGER, r NUMERIC)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 3), (2, 2.5), (3, None)])
    conn.close()
    frame = SQLiteTable(path, "t", key="k").scan_partition(0).collect()
    assert frame["r"].to_list() == [3.0, 2.5, None]


def test_a_lookup_of_a_value_of_another_type_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (k TEXT, n INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [("a", 1), ("b", 2.5)])
    conn.close()
    table = SQLiteTable(path, "t", key="k")
    assert table.lookup(pl.Series(["a"]))["n"].to_list() == [1]
    with pytest.raises(ValueError, match=r"not Int64: 2\.5"):
        table.lookup(pl.Series(["a", "b"]))


def test_closing_the_table_ends_an_open_pass(tmp_path: Path) -> None:
    """A run stopped mid-pass closes its sources: the read (a SQLite lock in rollback-journal
    mode) must end with them, or writers stay locked out."""
    table = sqlite_devices(tmp_path / "db.sqlite", n=40)
    reader = table.open_partition(0)
    assert isinstance(reader.poll(), pl.DataFrame)
    writer = sqlite3.connect(table.path, timeout=0.2)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer.execute("INSERT INTO devices VALUES ('zz', 's', 1.0)")
        writer.commit()
    writer.rollback()
    table.close()
    writer.execute("INSERT INTO devices VALUES ('zz', 's', 1.0)")
    writer.commit()
    writer.close()
    assert reader.poll() is not END_OF_PARTITION  # a later poll starts a new pass after it


def test_a_position_past_a_shrunk_table_ends_the_pass(tmp_path: Path) -> None:
    table = sqlite_devices(tmp_path / "db.sqlite", n=20)
    position = {"rows": table.scan_partition(0).collect().height}
    with sqlite3.connect(table.path) as conn:
        conn.execute("DELETE FROM devices WHERE device < 'd005'")
    conn.close()
    reader = SQLiteTable(table.path, "devices", key="device").open_partition(0)
    reader.seek(position)  # a checkpoint of the longer table still restores
    assert reader.poll() is END_OF_PARTITION


def test_a_table_with_an_open_pass_pickles(tmp_path: Path) -> None:
    import pickle

    table = sqlite_devices(tmp_path / "db.sqlite", n=20)
    reader = table.open_partition(0)
    reader.poll()
    copy = pickle.loads(pickle.dumps(table))
    assert copy.scan_partition(0).collect().height == 20
    table.close()


def test_a_postgres_pass_ends_with_close_and_runs_close_their_tables(postgres_dsn: str) -> None:
    execute(postgres_dsn, "CREATE TABLE held (id bigint, v text)")
    execute(postgres_dsn, "INSERT INTO held SELECT g, 'x' FROM generate_series(1, 30) g")
    table = PostgresTable(postgres_dsn, "held", key="id", batch_rows=10)
    table.open_partition(0).poll()
    table.close()  # or the pass's transaction would hold its lock: the DROP below would wait
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute("ALTER TABLE held ADD COLUMN w int")
    p = Pipeline()
    p.source(source := PostgresTable(postgres_dsn, "held", key="id")).sink(sink := MemorySink())
    run_bounded(p)
    assert sink.to_frame().height == 30
    assert source._conn is None  # the runner closed its source
