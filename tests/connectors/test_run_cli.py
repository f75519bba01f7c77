"""``strom run``: the sensor example end to end, clear errors, clean stops."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from connector_helpers import Sent, create_topic, produce

from strom.broker import Broker
from strom.cli.main import cli

STROM = str(Path(sys.executable).with_name("strom"))
EXAMPLE = str(Path(__file__).parents[2] / "examples" / "sensor_windows.py")
WINDOW = 10_000
PARTITIONS = 3

POISON = [
    (
        1,
        b'{"ts": 1, "device": "d1", "temp": "warm", "vibration": 0.5}',
        "does not match the schema: cannot parse 'warm' (string) as Float64",
    ),
    (2, b'{"ts": 2, "device": "d2"}', "missing or null field(s): temp, vibration"),
    (0, b"\xc3\x28", "not UTF-8: invalid continuation byte at byte 0"),
]


def _readings(n: int) -> list[tuple[int, dict[str, object]]]:
    """(partition, reading); every 9th reading is 4 s late: past the example's 2 s bound (so
    it may update a window already emitted) but well within its 5 s allowed lateness."""
    out = []
    for i in range(n):
        ts = i * 300 - (4_000 if i % 9 == 4 and i > 20 else 0)
        reading = {
            "ts": ts,
            "device": f"d{i % 4}",
            "temp": 15 + (i % 23) * 0.5,
            "vibration": (i * 7 % 31) / 8,
        }
        out.append((i % PARTITIONS, reading))
    return out  # fmt: skip


def _expected(readings: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """(device, window_start, window_end, count, mean_temp, max_vibration), computed directly."""
    groups: dict[tuple[str, int], list[dict[str, object]]] = {}
    for r in readings:
        ts = int(str(r["ts"]))
        groups.setdefault((str(r["device"]), ts - ts % WINDOW), []).append(r)
    rows = []
    for (device, start), rs in sorted(groups.items()):
        temps = [float(str(r["temp"])) for r in rs]
        rows.append(
            (device, start, start + WINDOW, len(rs), sum(temps) / len(temps),
             max(float(str(r["vibration"])) for r in rs))
        )  # fmt: skip
    return rows


def _fill(bootstrap: str, n: int) -> tuple[list[dict[str, object]], list[tuple[int, int, bytes]]]:
    create_topic(bootstrap, "sensors", PARTITIONS)
    sent = [Sent(p, json.dumps(r).encode()) for p, r in _readings(n)]
    for k, (p, value, _) in enumerate(POISON):
        sent.insert(50 * (k + 1), Sent(p, value))
    placed = produce(bootstrap, "sensors", sent)
    bad = [(part, off, s.value or b"") for s, (part, off) in zip(sent, placed, strict=True)
           if any(s.value == v for _, v, _ in POISON)]  # fmt: skip
    return [r for _, r in _readings(n)], bad


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


WINDOWS_SQL = (
    "SELECT device, window_start, window_end, count, mean_temp, max_vibration "
    "FROM sensor_windows ORDER BY device, window_start"
)


def _approx(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [(*r[:4], round(float(str(r[4])), 9), r[5]) for r in rows]


def _env(bootstrap: str, db: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STROM_BOOTSTRAP": bootstrap, "STROM_SQLITE": str(db), **extra}


def test_sensor_example_bounded_end_to_end(strom_broker: Broker, tmp_path: Path) -> None:
    readings, bad = _fill(strom_broker.bootstrap_servers, 600)
    db = tmp_path / "sensors.db"
    done = subprocess.run(
        [STROM, "run", EXAMPLE],
        env=_env(strom_broker.bootstrap_servers, db, STROM_BOUNDED="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every source ended" in done.stderr
    assert "operators" in done.stdout and "3:WindowAgg" in done.stdout
    assert _approx(_rows(db, WINDOWS_SQL)) == _approx(_expected(readings))
    letters = _rows(db, "SELECT reason, topic, partition, offset, raw FROM dead_letters")
    expected_letters = [
        (reason, "sensors", part, off, raw)
        for (part, off, raw) in bad
        for (_, value, reason) in POISON
        if value == raw
    ]
    assert sorted(letters, key=str) == sorted(expected_letters, key=str)
    tables = {r[0] for r in _rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "late_readings" not in tables  # nothing was too late, so that sink never wrote


def test_unbounded_run_stops_cleanly_on_sigterm(strom_broker: Broker, tmp_path: Path) -> None:
    readings, _ = _fill(strom_broker.bootstrap_servers, 300)
    by_partition: dict[int, int] = {}
    for p, r in _readings(300):
        by_partition[p] = max(by_partition.get(p, -(2**62)), int(str(r["ts"])))
    watermark = min(by_partition.values()) - 2_000  # the example's max_out_of_orderness
    fired = [row for row in _expected(readings) if int(str(row[2])) <= watermark]
    assert fired
    db = tmp_path / "sensors.db"
    with subprocess.Popen(
        [STROM, "run", EXAMPLE],
        env=_env(strom_broker.bootstrap_servers, db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        rows: list[tuple[object, ...]] = []
        deadline = time.monotonic() + 60
        while _approx(rows) != _approx(fired) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
            with contextlib.suppress(sqlite3.OperationalError):  # no table yet
                rows = _rows(db, WINDOWS_SQL)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert _approx(rows) == _approx(fired), err
    assert proc.returncode == 0, err
    assert "stopped: SIGTERM received" in err
    assert "KafkaSource('sensors')" in out and "lag" in out  # the source's own metrics


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["run", *args])
    return result.exit_code, result.output


def test_file_without_pipeline_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    code, output = _invoke(str(tmp_path / "empty.py"))
    assert code != 0
    assert "defines no pipeline" in output and "build_pipeline()" in output

    (tmp_path / "wrong.py").write_text("pipeline = 42\n")
    code, output = _invoke(str(tmp_path / "wrong.py"))
    assert code != 0 and "`pipeline` is a int" in output

    (tmp_path / "broken.py").write_text("raise RuntimeError('no config')\n")
    code, output = _invoke(str(tmp_path / "broken.py"))
    assert code != 0 and "RuntimeError: no config" in output


INVALID = """
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, Tumbling, agg

pipeline = Pipeline()
events = pipeline.source(MemorySource([[{"k": "a", "v": 1}]]))  # no timestamp=
events.key_by("k").window(Tumbling(1000)).agg(agg.count()).sink(MemorySink())
"""

VALID = """
import polars as pl
from strom.connectors import MemorySource, SQLiteSink
from strom.pipeline import Pipeline

def build_pipeline():
    p = Pipeline()
    p.source(MemorySource([[{"n": 1}, {"n": 2}], [{"n": 3}]])).filter(pl.col("n") > 1).sink(
        SQLiteSink(__file__ + ".db", "out")
    )
    return p
"""


def test_invalid_plan_fails_before_running(tmp_path: Path) -> None:
    (tmp_path / "invalid.py").write_text(INVALID)
    code, output = _invoke(str(tmp_path / "invalid.py"))
    assert code != 0
    assert "invalid pipeline" in output and "windows need event time" in output


def test_build_pipeline_runs_to_completion(tmp_path: Path) -> None:
    path = tmp_path / "valid.py"
    path.write_text(VALID)
    code, output = _invoke(str(path))
    assert code == 0, output
    assert _rows(Path(str(path) + ".db"), "SELECT n FROM out ORDER BY n") == [(2,), (3,)]
    assert "every source ended" in output


def test_max_seconds_stops_an_unbounded_run(strom_broker: Broker, tmp_path: Path) -> None:
    create_topic(strom_broker.bootstrap_servers, "sensors", 1)
    code, output = _invoke(
        EXAMPLE,
        "--bootstrap-server",
        strom_broker.bootstrap_servers,
        "--max-seconds",
        "0.5",
    )
    assert code == 0, output
    assert "stopped: --max-seconds 0.5 reached" in output


@pytest.fixture(autouse=True)
def _no_env_leak(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """In-process runs export STROM_BOOTSTRAP; keep it (and the example's database) local."""
    monkeypatch.delenv("STROM_BOOTSTRAP", raising=False)
    monkeypatch.setenv("STROM_SQLITE", str(tmp_path / "in-process.db"))
