"""SQLiteSink: tables from batch schemas, one transaction per batch, upserts replace rows."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from strom.connectors import MemorySource, SQLiteSink
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import StreamingExecutor, latest


def _select(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_insert_creates_table_with_types(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    sink = SQLiteSink(db, "t")
    sink.open()
    sink.write(
        pl.DataFrame(
            {
                "i": [1, None],
                "f": [0.5, 1.5],
                "s": ["a", "b"],
                "b": [b"\x00", None],
                "ok": [True, False],
                "at": [dt.datetime(2024, 1, 2, 3, 4, 5), None],
                "tags": [[1, 2], None],
                "point": [{"x": 1}, {"x": 2}],
            }
        )
    )
    sink.write(pl.DataFrame({"i": [3], "s": ["c"]}))  # a subset of the columns
    sink.close()
    types = {row[1]: row[2] for row in _select(db, "PRAGMA table_info(t)")}
    assert types == {
        "i": "INTEGER", "f": "REAL", "s": "TEXT", "b": "BLOB", "ok": "INTEGER",
        "at": "TEXT", "tags": "TEXT", "point": "TEXT",
    }  # fmt: skip
    assert _select(db, "SELECT * FROM t ORDER BY rowid") == [
        (1, 0.5, "a", b"\x00", 1, "2024-01-02 03:04:05.000000", "[1,2]", '{"x":1}'),
        (None, 1.5, "b", None, 0, None, None, '{"x":2}'),
        (3, None, "c", None, None, None, None, None),
    ]
    assert sink.rows_written == 3


def test_a_failing_batch_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    sink = SQLiteSink(db, "t", key=["k"])
    sink.open()
    sink.write(pl.DataFrame({"k": [1], "v": ["one"]}))
    with pytest.raises(sqlite3.IntegrityError):
        sink.write(pl.DataFrame({"k": [2, 1], "v": ["two", "dup"]}))  # insert mode: dup key
    with pytest.raises(ValueError, match="no column"):
        sink.write(pl.DataFrame({"k": [3], "extra": [0]}))
    sink.close()
    assert _select(db, "SELECT k, v FROM t") == [(1, "one")]


def test_upsert_into_existing_table(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (k TEXT, w INTEGER, v REAL, other TEXT DEFAULT 'kept')")
    sink = SQLiteSink(db, "t", key=["k", "w"], mode="upsert")
    sink.open()
    sink.write(pl.DataFrame({"k": ["a", "b"], "w": [0, 0], "v": [1.0, 2.0]}))
    sink.write(pl.DataFrame({"k": ["a", "a"], "w": [0, 10], "v": [3.0, 4.0]}))
    sink.close()
    assert _select(db, "SELECT k, w, v, other FROM t ORDER BY k, w") == [
        ("a", 0, 3.0, "kept"),
        ("a", 10, 4.0, "kept"),
        ("b", 0, 2.0, "kept"),
    ]


def test_window_updates_replace_earlier_rows(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    batches = [
        [{"k": "a", "ts": 1_000, "v": 1}, {"k": "b", "ts": 2_000, "v": 5}],
        [{"k": "a", "ts": 12_000, "v": 2}],  # the watermark passes 10 s: [0, 10 s) fires
        [{"k": "a", "ts": 3_000, "v": 10}],  # late but within lateness: re-emitted, is_update
        [{"k": "b", "ts": 25_000, "v": 1}],
    ]
    p = Pipeline()
    results = (
        p.source(MemorySource([batches]), timestamp="ts")
        .key_by("k")
        .window(Tumbling(10_000), allowed_lateness_ms=10_000)
        .agg(agg.count(), agg.sum("v"))
    )
    results.sink(SQLiteSink(db, "windows", key=["k", "window_start"], mode="upsert"))
    results.sink(inserted := SQLiteSink(db, "history"))
    StreamingExecutor(p).run()
    history = _select(
        db, "SELECT k, window_start, window_end, count, sum_v, is_update FROM history"
    )
    assert ("a", 0, 10_000, 2, 11, 1) in history and ("a", 0, 10_000, 1, 1, 0) in history
    assert inserted.rows_written == len(history)
    rows = _select(db, "SELECT k, window_start, count, sum_v, is_update FROM windows ORDER BY 1, 2")
    frame = pl.DataFrame(
        history,
        schema=["k", "window_start", "window_end", "count", "sum_v", "is_update"],
        orient="row",
    )
    expected = latest(frame, ["k"]).sort("k", "window_start").drop("window_end")
    assert rows == expected.rows()
    assert rows == [
        ("a", 0, 2, 11, 1),
        ("a", 10_000, 1, 2, 0),
        ("b", 0, 1, 5, 0),
        ("b", 20_000, 1, 1, 0),
    ]


def test_upsert_needs_a_key() -> None:
    with pytest.raises(ValueError, match="needs key"):
        SQLiteSink("x.db", "t", mode="upsert")
