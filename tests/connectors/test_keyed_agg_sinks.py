"""An updating table into upsert sinks keyed by its keys: after a streaming run the table holds
the bounded group-by, at-least-once and exactly-once (checkpointed), in PostgreSQL and SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strom.bounded import run_bounded
from strom.connectors import MemorySink, MemorySource, PostgresSink, SQLiteSink
from strom.engine.contracts import Sink
from strom.pipeline import Pipeline, agg
from strom.runtime import run_streaming

BATCHES = [
    [{"ts": t, "customer": f"u{t % 11}", "spent": (t * 7) % 23} for t in range(i, i + 40)]
    for i in range(0, 400, 40)
]
COLUMNS = "customer, n, sum_spent, last_spent, max_spent"


def _build(sink: Sink) -> Pipeline:
    p = Pipeline()
    events = p.source(MemorySource([BATCHES[0::2], BATCHES[1::2]]), timestamp="ts")
    events.key_by("customer").agg(
        agg.count(name="n"), agg.sum("spent"), agg.last("spent"), agg.max("spent")
    ).sink(sink)
    return p


def _expected() -> list[tuple[Any, ...]]:
    run_bounded(_build(out := MemorySink()))
    return out.to_frame().drop("is_update").rows()


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_postgres_upsert_holds_the_bounded_table(
    postgres_dsn: str, tmp_path: Path, guarantee: Any
) -> None:
    sink = PostgresSink(
        postgres_dsn, "features", mode="upsert", key=["customer"], guarantee=guarantee
    )
    if guarantee == "exactly-once":
        run_streaming(_build(sink), checkpoint_dir=tmp_path / "chk", checkpoint_interval=0)
    else:
        run_streaming(_build(sink))
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT {COLUMNS} FROM features ORDER BY customer").fetchall()
    assert rows == _expected()


def test_sqlite_exactly_once_upsert_holds_the_bounded_table(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    sink = SQLiteSink(db, "features", mode="upsert", key=["customer"], guarantee="exactly-once")
    run_streaming(_build(sink), checkpoint_dir=tmp_path / "chk", checkpoint_interval=0)
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT {COLUMNS} FROM features ORDER BY customer").fetchall()
    assert rows == _expected()
