"""PostgresSink against a real server: COPY inserts, staged upserts, pipelines, bad input."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import subprocess
import sys
import threading
from typing import Any

import polars as pl
import psycopg
import pytest
from postgres_server import PostgresServer

from strom.bounded import run_bounded
from strom.connectors import MemorySource, PostgresConnectionError, PostgresSink
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import run_streaming


def select(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        return conn.execute(sql, params).fetchall()


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def column_types(dsn: str, table: str) -> dict[str, str]:
    rows = select(
        dsn,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    return dict(rows)


def write(sink: PostgresSink, *batches: pl.DataFrame) -> None:
    sink.open()
    try:
        for batch in batches:
            sink.write(batch)
    finally:
        sink.close()


def test_insert_creates_table_with_types(postgres_dsn: str) -> None:
    at = dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    batch = pl.DataFrame(
        {
            "i": [1, None],
            "small": pl.Series([1, 2], dtype=pl.Int16),
            "u64": pl.Series([2**64 - 1, 0], dtype=pl.UInt64),
            "f": [0.5, None],
            "f32": pl.Series([1.5, 2.5], dtype=pl.Float32),
            "s": ["a", ""],
            "b": [b"\x00\xff", None],
            "ok": [True, None],
            "at": [at, None],
            "zoned": pl.Series([at, at]).dt.replace_time_zone("Europe/Berlin"),
            "day": [dt.date(2024, 1, 2), None],
            "clock": [dt.time(3, 4, 5, 6), None],
            "took": [dt.timedelta(seconds=90, microseconds=7), None],
            "price": pl.Series([decimal.Decimal("1.25"), None], dtype=pl.Decimal(10, 2)),
            "tags": [[1, 2], None],
            "point": [{"x": 1}, {"x": 2}],
            "cat": pl.Series(["x", "y"], dtype=pl.Categorical),
            "nothing": [None, None],
        }
    )
    sink = PostgresSink(postgres_dsn, "t")
    write(sink, batch, pl.DataFrame({"i": [3], "s": ["c"]}))  # a subset of the columns
    assert column_types(postgres_dsn, "t") == {
        "i": "bigint", "small": "smallint", "u64": "numeric(20,0)", "f": "double precision",
        "f32": "real", "s": "text", "b": "bytea", "ok": "boolean",
        "at": "timestamp without time zone", "zoned": "timestamp with time zone", "day": "date",
        "clock": "time without time zone", "took": "interval", "price": "numeric(10,2)",
        "tags": "jsonb", "point": "jsonb", "cat": "text", "nothing": "text",
    }  # fmt: skip
    utc = dt.UTC
    rows = select(postgres_dsn, "SELECT * FROM t ORDER BY i NULLS LAST")
    assert rows == [
        (
            1, 1, decimal.Decimal(2**64 - 1), 0.5, 1.5, "a", b"\x00\xff", True, at,
            dt.datetime(2024, 1, 2, 2, 4, 5, 123456, tzinfo=utc), dt.date(2024, 1, 2),
            dt.time(3, 4, 5, 6), dt.timedelta(seconds=90, microseconds=7),
            decimal.Decimal("1.25"), [1, 2], {"x": 1}, "x", None,
        ),
        (3, *[None] * 4, "c", *[None] * 12),
        (
            None, 2, decimal.Decimal(0), None, 2.5, "", None, None, None,
            dt.datetime(2024, 1, 2, 2, 4, 5, 123456, tzinfo=utc), None, None, None, None,
            None, {"x": 2}, "y", None,
        ),
    ]  # fmt: skip
    assert sink.rows_written == 3


def test_insert_over_batches_appends(postgres_dsn: str) -> None:
    batches = [
        pl.DataFrame({"k": list(range(i * 100, i * 100 + 100)), "v": [f"v{i}"] * 100})
        for i in range(5)
    ]
    write(PostgresSink(postgres_dsn, "t", key=["k"]), *batches)
    assert select(postgres_dsn, "SELECT count(*), count(DISTINCT k), sum(k) FROM t") == [
        (500, 500, sum(range(500)))
    ]
    assert column_types(postgres_dsn, "t") == {"k": "bigint", "v": "text"}
    assert select(postgres_dsn, "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                  "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                  "WHERE i.indrelid = 't'::regclass AND i.indisprimary") == [("k",)]  # fmt: skip


def test_upsert_round_trip_updates_existing_keys(postgres_dsn: str) -> None:
    sink = PostgresSink(postgres_dsn, "t", mode="upsert", key=["k", "w"])
    expected: dict[tuple[str, int], tuple[float, str]] = {}
    batches = []
    for b in range(6):
        rows = [(f"k{(b * 7 + i) % 13}", i % 3, float(b * 100 + i), f"b{b}") for i in range(20)]
        batches.append(pl.DataFrame(rows, schema=["k", "w", "v", "src"], orient="row"))
        for k, w, v, src in rows:  # within a batch the last row of a key wins
            expected[(k, w)] = (v, src)
    write(sink, *batches)
    rows = select(postgres_dsn, "SELECT k, w, v, src FROM t ORDER BY k, w")
    assert rows == [(k, w, *expected[(k, w)]) for k, w in sorted(expected)]
    assert sink.rows_written == 6 * 20


def test_upsert_into_existing_table_adds_unique_index(postgres_dsn: str) -> None:
    execute(
        postgres_dsn,
        "CREATE TABLE t (k text, w integer, v real, other text DEFAULT 'kept')",
        "INSERT INTO t VALUES ('a', 0, 0.5, 'old')",
    )
    sink = PostgresSink(postgres_dsn, "t", mode="upsert", key=["k", "w"])
    write(
        sink,
        pl.DataFrame({"k": ["a", "b"], "w": [0, 0], "v": [1.0, 2.0]}),
        pl.DataFrame({"k": ["a", "a"], "w": [0, 10], "v": [3.0, 4.0]}),
    )
    assert select(postgres_dsn, "SELECT k, w, v, other FROM t ORDER BY k, w") == [
        ("a", 0, 3.0, "old"),
        ("a", 10, 4.0, "kept"),
        ("b", 0, 2.0, "kept"),
    ]
    # a second sink finds the index it needs and adds none
    write(PostgresSink(postgres_dsn, "t", mode="upsert", key=["w", "k"]), pl.DataFrame(
        {"k": ["b"], "w": [0], "v": [9.0]}))  # fmt: skip
    indexes = select(postgres_dsn, "SELECT count(*) FROM pg_indexes WHERE tablename = 't'")
    assert indexes == [(1,)]


def test_upsert_with_only_key_columns_does_nothing_on_conflict(postgres_dsn: str) -> None:
    sink = PostgresSink(postgres_dsn, "t", mode="upsert", key=["k"])
    write(sink, pl.DataFrame({"k": [1, 2]}), pl.DataFrame({"k": [2, 3, 3]}))
    assert select(postgres_dsn, "SELECT k FROM t ORDER BY k") == [(1,), (2,), (3,)]


def test_schema_qualified_table(postgres_dsn: str) -> None:
    execute(postgres_dsn, "CREATE SCHEMA IF NOT EXISTS other_place")
    try:
        write(
            PostgresSink(postgres_dsn, "other_place.Mixed Case", mode="upsert", key=["k"]),
            pl.DataFrame({"k": [1], "v": ["x"]}),
            pl.DataFrame({"k": [1], "v": ["y"]}),
        )
        assert select(postgres_dsn, 'SELECT k, v FROM other_place."Mixed Case"') == [(1, "y")]
    finally:
        execute(postgres_dsn, "DROP SCHEMA other_place CASCADE")


def _window_pipeline(dsn: str, suffix: str) -> Pipeline:
    batches = [
        [{"k": "a", "ts": 1_000, "v": 1}, {"k": "b", "ts": 2_000, "v": 5}],
        [{"k": "a", "ts": 12_000, "v": 2}],  # the watermark passes 10 s: [0, 10 s) fires
        [{"k": "a", "ts": 3_000, "v": 10}],  # late but within lateness: re-emitted, is_update
        [{"k": "b", "ts": 25_000, "v": 1}, {"k": "c", "ts": 26_000, "v": 4}],
    ]
    p = Pipeline()
    events = p.source(MemorySource([batches]), timestamp="ts")
    events.filter(pl.col("v") > 1).sink(PostgresSink(dsn, f"big_{suffix}"))
    (
        events.key_by("k")
        .window(Tumbling(10_000), allowed_lateness_ms=10_000)
        .agg(agg.count(), agg.sum("v"))
        .sink(PostgresSink(dsn, f"windows_{suffix}", mode="upsert", key=["k", "window_start"]))
    )
    return p


def test_pipeline_streaming_and_bounded_give_the_same_tables(postgres_dsn: str) -> None:
    run_streaming(_window_pipeline(postgres_dsn, "streamed"))
    run_bounded(_window_pipeline(postgres_dsn, "bounded"))
    windows = "SELECT k, window_start, window_end, count, sum_v FROM windows_{} ORDER BY 1, 2"
    streamed = select(postgres_dsn, windows.format("streamed"))
    assert streamed == select(postgres_dsn, windows.format("bounded"))
    assert streamed == [
        ("a", 0, 10_000, 2, 11),
        ("a", 10_000, 20_000, 1, 2),
        ("b", 0, 10_000, 1, 5),
        ("b", 20_000, 30_000, 1, 1),
        ("c", 20_000, 30_000, 1, 4),
    ]
    big = "SELECT k, ts, v FROM big_{} ORDER BY ts"
    assert select(postgres_dsn, big.format("streamed")) == select(
        postgres_dsn, big.format("bounded")
    )
    assert len(select(postgres_dsn, big.format("bounded"))) == 4


# --- bad input -----------------------------------------------------------------------------


def test_constraint_violation_rolls_back_the_batch(postgres_dsn: str) -> None:
    execute(postgres_dsn, "CREATE TABLE t (k bigint PRIMARY KEY, v bigint CHECK (v >= 0))")
    sink = PostgresSink(postgres_dsn, "t")
    sink.open()
    sink.write(pl.DataFrame({"k": [1], "v": [10]}))
    with pytest.raises(psycopg.errors.UniqueViolation) as dup:
        sink.write(pl.DataFrame({"k": [2, 1], "v": [20, 30]}))
    assert any("rolled back" in note for note in dup.value.__notes__)
    with pytest.raises(psycopg.errors.CheckViolation):
        sink.write(pl.DataFrame({"k": [3, 4], "v": [1, -1]}))
    sink.write(pl.DataFrame({"k": [5], "v": [50]}))  # the sink goes on after a failed batch
    sink.close()
    assert select(postgres_dsn, "SELECT k, v FROM t ORDER BY k") == [(1, 10), (5, 50)]
    assert sink.rows_written == 2


def test_upsert_constraint_violation_then_recovery(postgres_dsn: str) -> None:
    execute(postgres_dsn, "CREATE TABLE t (k bigint PRIMARY KEY, v bigint CHECK (v >= 0))")
    sink = PostgresSink(postgres_dsn, "t", mode="upsert", key=["k"])
    sink.open()
    sink.write(pl.DataFrame({"k": [1, 2], "v": [1, 2]}))
    with pytest.raises(psycopg.errors.CheckViolation):
        sink.write(pl.DataFrame({"k": [1, 3], "v": [100, -3]}))
    sink.write(pl.DataFrame({"k": [2, 4], "v": [20, 4]}))  # the staging table is still there
    sink.close()
    assert select(postgres_dsn, "SELECT k, v FROM t ORDER BY k") == [(1, 1), (2, 20), (4, 4)]


def test_wrong_dtypes_for_an_existing_table(postgres_dsn: str) -> None:
    execute(postgres_dsn, "CREATE TABLE t (k integer, at timestamptz, ok boolean, v text)")
    sink = PostgresSink(postgres_dsn, "t")
    sink.open()
    with pytest.raises(TypeError, match=r"'k' is int4 in the table but Float64") as bad:
        sink.write(pl.DataFrame({"k": [1.5], "ok": [True]}))
    assert "'ok'" not in str(bad.value)
    with pytest.raises(TypeError, match=r"'ok' is bool in the table but Int64"):
        sink.write(pl.DataFrame({"ok": [1]}))
    with pytest.raises(TypeError, match=r"'at' is timestamptz in the table but Binary"):
        sink.write(pl.DataFrame({"at": [b"x"]}))
    # text is parsed by PostgreSQL: a value it cannot parse fails the batch there
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        sink.write(pl.DataFrame({"k": ["7", "seven"]}))
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):  # Int64 into integer
        sink.write(pl.DataFrame({"k": [1, 2**40]}))
    sink.write(pl.DataFrame({"k": ["8"], "v": [None]}))
    sink.write(pl.DataFrame({"k": [9], "at": [dt.datetime(2024, 1, 1)], "ok": [False]}))
    sink.close()
    assert select(postgres_dsn, "SELECT k, at IS NOT NULL, ok FROM t ORDER BY k") == [
        (8, False, None),
        (9, True, False),
    ]
    with pytest.raises(ValueError, match="has no column"):
        write(PostgresSink(postgres_dsn, "t"), pl.DataFrame({"k": [1], "extra": [1]}))


def test_unsupported_dtype_fails_before_creating_the_table(postgres_dsn: str) -> None:
    batch = pl.DataFrame({"k": [1], "o": pl.Series([object()], dtype=pl.Object)})
    with pytest.raises(TypeError, match="no column type for Polars Object"):
        write(PostgresSink(postgres_dsn, "t"), batch)
    assert select(postgres_dsn, "SELECT to_regclass('t')") == [(None,)]


def test_huge_text_values(postgres_dsn: str) -> None:
    huge = "x" * (16 * 1024 * 1024) + '\n,"end'  # one 16 MiB value
    many = [f"{i}:" + 'é,"\n' * 1_000 for i in range(2_000)]
    sink = PostgresSink(postgres_dsn, "t", mode="upsert", key=["k"])
    write(
        sink,
        pl.DataFrame({"k": [0], "s": [huge]}),
        pl.DataFrame({"k": range(1, 2_001), "s": many}),
    )
    assert select(postgres_dsn, "SELECT length(s), s = %s FROM t WHERE k = 0", (huge,)) == [
        (len(huge), True)
    ]
    back = select(postgres_dsn, "SELECT s FROM t WHERE k > 0 ORDER BY k")
    assert [r[0] for r in back] == many


def test_strings_that_look_like_csv_markers(postgres_dsn: str) -> None:
    values = ["\\.", "", None, "\\N", '"', "a\r\nb", " padded ", "NULL", "\\x00"]
    write(PostgresSink(postgres_dsn, "t"), pl.DataFrame({"i": range(len(values)), "s": values}))
    assert [r[0] for r in select(postgres_dsn, "SELECT s FROM t ORDER BY i")] == values


def test_nan_and_infinite_floats(postgres_dsn: str) -> None:
    values = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, None]
    batch = pl.DataFrame({"k": range(len(values)), "f": values, "f32": values}).with_columns(
        pl.col("f32").cast(pl.Float32)
    )
    write(PostgresSink(postgres_dsn, "t", mode="upsert", key=["k"]), batch, batch)
    rows = select(postgres_dsn, "SELECT f, f32 FROM t ORDER BY k")
    got = [r[0] for r in rows]
    assert math.isnan(got[0]) and got[1:3] == [math.inf, -math.inf]
    assert got[3:] == [0.0, 5e-324, 1.7976931348623157e308, None]
    assert math.copysign(1, got[3]) == -1
    assert math.isnan(rows[0][1]) and [r[1] for r in rows[1:3]] == [math.inf, -math.inf]


def test_null_keys_fail_before_writing(postgres_dsn: str) -> None:
    sink = PostgresSink(postgres_dsn, "t", mode="upsert", key=["k", "w"])
    sink.open()
    sink.write(pl.DataFrame({"k": ["a"], "w": [1], "v": [1]}))
    with pytest.raises(ValueError, match=r"1 row\(s\) have a null in key column"):
        sink.write(pl.DataFrame({"k": ["a", None], "w": [1, 2], "v": [2, 3]}))
    sink.close()
    assert select(postgres_dsn, "SELECT k, w, v FROM t") == [("a", 1, 1)]


def test_nul_characters_fail_before_writing(postgres_dsn: str) -> None:
    sink = PostgresSink(postgres_dsn, "t")
    with pytest.raises(ValueError, match=r"\['s'\] hold NUL characters"):
        write(sink, pl.DataFrame({"s": ["fine", "bad\x00"], "b": [b"\x00", b"\x00"]}))
    assert select(postgres_dsn, "SELECT count(*) FROM t") == [(0,)]  # created, empty


# --- connections ---------------------------------------------------------------------------


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_names_the_server() -> None:
    port = _dead_port()
    sink = PostgresSink(f"postgresql://someone:secret@127.0.0.1:{port}/db", "t")
    with pytest.raises(PostgresConnectionError, match=f"127.0.0.1:{port}/db") as refused:
        sink.open()
    assert "secret" not in str(refused.value)
    with pytest.raises(RuntimeError, match="before open"):
        sink.write(pl.DataFrame({"k": [1]}))


def test_connection_lost_between_batches_is_retried(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    for mode in ("insert", "upsert"):
        table = f"t_{mode}"
        sink = PostgresSink(postgres_dsn, table, mode=mode, key=["k"], retry_backoff_s=0.01)
        sink.open()
        sink.write(pl.DataFrame({"k": [1, 2], "v": ["a", "b"]}))
        with postgres_server.connect() as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                "AND backend_type = 'client backend'"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        sink.write(pl.DataFrame({"k": [3, 2], "v": ["c", "B"]}) if mode == "upsert" else
                   pl.DataFrame({"k": [3, 4], "v": ["c", "d"]}))  # fmt: skip
        sink.close()
        rows = select(postgres_dsn, f"SELECT k, v FROM {table} ORDER BY k")
        if mode == "upsert":
            assert rows == [(1, "a"), (2, "B"), (3, "c")]
        else:
            assert rows == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]


def test_connection_lost_inside_the_batch_transaction(postgres_dsn: str) -> None:
    """The server drops the connection in the middle of the COPY (a trigger terminates its own
    backend, once): the sink reconnects and writes the whole batch once."""
    execute(
        postgres_dsn,
        "CREATE TABLE t (k bigint PRIMARY KEY, v text)",
        "CREATE SEQUENCE kills",
        """CREATE FUNCTION kill_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.k = 500 AND nextval('kills') = 1 THEN
                PERFORM pg_terminate_backend(pg_backend_pid());
                PERFORM pg_sleep(5);
            END IF;
            RETURN NEW;
        END $$""",
        "CREATE TRIGGER kill_once BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION kill_once()",
    )
    sink = PostgresSink(postgres_dsn, "t", retry_backoff_s=0.01)
    write(sink, pl.DataFrame({"k": range(1_000), "v": "x"}))
    assert select(postgres_dsn, "SELECT count(*), count(DISTINCT k) FROM t") == [(1_000, 1_000)]
    assert select(postgres_dsn, "SELECT last_value FROM kills") == [(2,)]


def test_transaction_rolled_back_by_the_server_is_retried(postgres_dsn: str) -> None:
    """A serialization failure (SQLSTATE 40001, raised twice by a trigger) rolls the upsert
    back; the sink writes the batch again on the same connection."""
    execute(
        postgres_dsn,
        "CREATE TABLE t (k bigint PRIMARY KEY, v text)",
        "CREATE SEQUENCE failures",
        """CREATE FUNCTION fail_twice() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('failures') <= 2 THEN
                RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001';
            END IF;
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER fail_twice AFTER INSERT ON t FOR EACH STATEMENT "
        "EXECUTE FUNCTION fail_twice()",
    )
    sink = PostgresSink(postgres_dsn, "t", mode="upsert", key=["k"], retry_backoff_s=0.01)
    write(sink, pl.DataFrame({"k": [1, 2], "v": ["a", "b"]}))
    assert select(postgres_dsn, "SELECT k, v FROM t ORDER BY k") == [(1, "a"), (2, "b")]
    once = PostgresSink(postgres_dsn, "t", mode="upsert", key=["k"], retries=0)
    execute(postgres_dsn, "ALTER SEQUENCE failures RESTART")
    with pytest.raises(psycopg.errors.SerializationFailure) as failed:
        write(once, pl.DataFrame({"k": [1], "v": ["z"]}))
    assert any("rolled back" in note for note in failed.value.__notes__)
    assert select(postgres_dsn, "SELECT k, v FROM t ORDER BY k") == [(1, "a"), (2, "b")]


def test_connection_lost_for_good_surfaces_and_writes_nothing(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    role = "strom_sink_test"
    schema = select(postgres_dsn, "SELECT current_schema()")[0][0]
    execute(
        postgres_dsn,
        f"CREATE ROLE {role} LOGIN",
        f"GRANT ALL ON SCHEMA {schema} TO {role}",
    )
    dsn = postgres_server.dsn_for(user=role, options=f"'-c search_path={schema}'")
    try:
        sink = PostgresSink(dsn, "t", retries=2, retry_backoff_s=0.01)
        sink.open()
        sink.write(pl.DataFrame({"k": [1]}))
        execute(
            postgres_dsn,
            f"ALTER ROLE {role} NOLOGIN",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
        )
        with pytest.raises(PostgresConnectionError) as lost:
            sink.write(pl.DataFrame({"k": [2, 3]}))
        message = str(lost.value)
        assert f"127.0.0.1:{postgres_server.port}/strom_test" in message
        assert "after 3 attempt(s)" in message
        sink.close()
        assert select(postgres_dsn, "SELECT k FROM t") == [(1,)]
        assert sink.rows_written == 1
    finally:
        execute(
            postgres_dsn,
            f"DROP TABLE IF EXISTS {schema}.t",
            f"REVOKE ALL ON SCHEMA {schema} FROM {role}",
            f"DROP ROLE {role}",
        )


def test_missing_driver_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "from strom.connectors import SQLiteSink, MemorySink\n"
        "try:\n"
        "    from strom.connectors import PostgresSink\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'strom[postgres]'" in out.stdout


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="needs key"):
        PostgresSink("dbname=x", "t", mode="upsert")
    with pytest.raises(ValueError, match="mode must be"):
        PostgresSink("dbname=x", "t", mode="merge")
    with pytest.raises(ValueError, match="retries"):
        PostgresSink("dbname=x", "t", retries=-1)


def test_sinks_preparing_one_table_at_once(postgres_dsn: str) -> None:
    """Several workers' sinks create (and upsert into) the same table concurrently."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            sink = PostgresSink(postgres_dsn, "shared", mode="upsert", key=["k"])
            write(sink, pl.DataFrame({"k": [i, 100], "v": [f"w{i}", "any"]}))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert select(postgres_dsn, "SELECT count(*) FROM shared") == [(7,)]


def test_rows_are_visible_to_another_connection_after_pre_commit(postgres_dsn: str) -> None:
    """The sink contract's at-least-once phases: durable at ``pre_commit`` (already at each
    write's commit), nothing to publish at ``commit``, nothing taken back by ``abort``."""
    sink = PostgresSink(postgres_dsn, "phases")
    sink.open()
    sink.write(pl.DataFrame({"id": [1, 2]}))
    sink.pre_commit(1)
    assert select(postgres_dsn, "SELECT id FROM phases ORDER BY id") == [(1,), (2,)]
    sink.commit(1)
    sink.write(pl.DataFrame({"id": [3]}))
    sink.abort(2)
    sink.close()
    assert select(postgres_dsn, "SELECT count(*) FROM phases") == [(3,)]
