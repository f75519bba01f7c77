"""``examples/user_features.py``: ``strom run --engine stream`` streams the order files into an
upserted SQLite table whose rows equal DuckDB's group-by over the same files, a bounded run's,
and those of ``strom run``'s default engine for it (the local batch engine)."""

from __future__ import annotations

import json
import os
import random
import runpy
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from strom import run_bounded

STROM = str(Path(sys.executable).with_name("strom"))
EXAMPLE = str(Path(__file__).parents[2] / "examples" / "user_features.py")
COLUMNS = "user, orders, total, mean_amount, largest, last_item"


def _write_orders(directory: Path) -> None:
    rng = random.Random(11)
    directory.mkdir()
    ts = 0
    for f in range(5):
        lines = []
        for _ in range(200):
            ts += rng.randint(1, 50)  # distinct times: last_item has no ties to break
            order = {"ts": ts, "user": f"u{rng.randint(0, 30)}", "item": rng.choice("abcd"),
                     "amount": round(rng.uniform(1, 100), 2)}  # fmt: skip
            lines.append(json.dumps(order))
        (directory / f"part-{f}.ndjson").write_text("\n".join(lines) + "\n")


def _table(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as con:
        rows = con.execute(f"SELECT {COLUMNS} FROM user_features ORDER BY user").fetchall()
    # float sums in another order differ in the last bits
    return [(*r[:2], round(float(str(r[2])), 6), round(float(str(r[3])), 9), *r[4:]) for r in rows]


def test_strom_run_keeps_the_table_equal_to_duckdb_and_to_a_bounded_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_orders(tmp_path / "orders")
    glob = str(tmp_path / "orders" / "*.ndjson")
    streamed_db = tmp_path / "streamed.db"
    env = {**os.environ, "STROM_ORDERS": glob, "STROM_SQLITE": str(streamed_db)}
    done = subprocess.run(
        [STROM, "run", "--engine", "stream", EXAMPLE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "KeyedAgg" in done.stdout  # the streaming operator's metrics are printed

    expected = duckdb.sql(
        f"SELECT user, count(*), round(sum(amount), 6), round(avg(amount), 9), max(amount), "
        f"last(item ORDER BY ts) FROM read_ndjson_auto('{glob}') GROUP BY user ORDER BY user"
    ).fetchall()
    streamed = _table(streamed_db)
    assert len(streamed) == 31
    assert streamed == expected

    bounded_db = tmp_path / "bounded.db"
    monkeypatch.setenv("STROM_ORDERS", glob)
    monkeypatch.setenv("STROM_SQLITE", str(bounded_db))
    module = runpy.run_path(EXAMPLE)
    run_bounded(module["pipeline"])
    assert _table(bounded_db) == streamed

    local_db = tmp_path / "local.db"
    env["STROM_SQLITE"] = str(local_db)
    done = subprocess.run(
        [STROM, "run", EXAMPLE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "engine: local" in done.stderr
    assert _table(local_db) == streamed
