"""``strom run --workers N``: worker processes sharing a topic give one process's results."""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from connector_helpers import Sent, create_topic, produce

from strom.bounded import run_bounded
from strom.broker import Broker
from strom.cli.main import cli

STROM = str(Path(sys.executable).with_name("strom"))
EXAMPLE = str(Path(__file__).parents[2] / "examples" / "sensor_windows.py")
PARTITIONS = 4
WINDOWS_SQL = (
    "SELECT device, window_start, window_end, count, round(mean_temp, 9), max_vibration, "
    "is_update FROM sensor_windows ORDER BY device, window_start"
)
LETTERS_SQL = "SELECT reason, partition, offset, raw FROM dead_letters ORDER BY partition, offset"


def _fill(bootstrap: str, n: int) -> None:
    """``n`` readings of 5 devices over 4 partitions; every 9th is 4 s behind (past the
    example's 2 s bound, within its 5 s lateness: it may update a window, never miss it), and
    two are undecodable."""
    create_topic(bootstrap, "sensors", PARTITIONS)
    sent = []
    for i in range(n):
        ts = i * 250 - (4_000 if i % 9 == 4 and i > 20 else 0)
        reading = {
            "ts": ts,
            "device": f"d{i % 5}",
            "temp": 15 + (i % 23) * 0.5,
            "vibration": (i * 7 % 31) / 8,
        }
        sent.append(Sent(i % PARTITIONS, json.dumps(reading).encode()))
    sent.insert(40, Sent(1, b'{"ts": 1, "device": "d1"}'))
    sent.insert(90, Sent(2, b"not json"))
    produce(bootstrap, "sensors", sent)


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _env(bootstrap: str, db: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STROM_BOOTSTRAP": bootstrap, "STROM_SQLITE": str(db), **extra}


def _strom_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STROM, "run", EXAMPLE, *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_two_workers_over_four_partitions_equal_one_worker_and_bounded(
    strom_broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    _fill(bootstrap, 480)
    tables = {}
    for workers in (2, 1):
        db = tmp_path / f"workers{workers}.db"
        done = _strom_run(_env(bootstrap, db, STROM_BOUNDED="1"), "--workers", str(workers))
        assert done.returncode == 0, done.stdout + done.stderr
        windows = _rows(db, WINDOWS_SQL)
        assert windows, done.stderr
        tables[workers] = ([r[:6] for r in windows], _rows(db, LETTERS_SQL))
    assert tables[2] == tables[1]
    assert len(tables[2][1]) == 2  # the undecodable readings, once each, by their worker
    # the bounded runner over the same topic
    db = tmp_path / "bounded.db"
    for name, value in _env(bootstrap, db, STROM_BOUNDED="1").items():
        monkeypatch.setenv(name, value)
    run_bounded(runpy.run_path(EXAMPLE)["pipeline"])
    bounded = [r[:6] for r in _rows(db, WINDOWS_SQL)]
    assert tables[2][0] == bounded


def test_two_workers_stream_and_stop_cleanly_on_sigterm(
    strom_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    _fill(bootstrap, 400)
    db = tmp_path / "sensors.db"
    with subprocess.Popen(
        [STROM, "run", EXAMPLE, "--workers", "2"],
        env=_env(bootstrap, db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        devices: set[object] = set()
        deadline = time.monotonic() + 60
        while len(devices) < 5 and time.monotonic() < deadline:  # both workers emit results
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
            with contextlib.suppress(sqlite3.OperationalError):  # no table yet
                devices = {r[0] for r in _rows(db, "SELECT device FROM sensor_windows")}
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert len(devices) == 5, err
    assert proc.returncode == 0, err
    assert "stopped: SIGTERM received" in err
    for i in (0, 1):
        assert f"[worker {i}] stopped: SIGTERM received" in err
        assert f"worker {i} of 2: exited with status 0" in out
    assert out.count("operators") == 2 and "repartition writer" in out
    assert not any(_alive(pid) for pid in workers)


def test_a_killed_worker_fails_the_run(strom_broker: Broker, tmp_path: Path) -> None:
    bootstrap = strom_broker.bootstrap_servers
    _fill(bootstrap, 40)
    with subprocess.Popen(
        [STROM, "run", EXAMPLE, "--workers", "2"],
        env=_env(bootstrap, tmp_path / "sensors.db"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        deadline = time.monotonic() + 30
        while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2, proc.communicate()
        time.sleep(1.0)  # let them start reading
        os.kill(workers[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "of 2 was killed by SIGKILL" in err
    assert "stopping the others" in err
    assert not _alive(workers[0])


def test_a_killed_worker_with_checkpoints_is_restarted_alone(
    strom_broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a checkpoint directory the supervisor restarts a killed worker, which resumes
    from its own last checkpoint while the other runs on; the upserted windows converge to the
    bounded result (at-least-once: the example's sinks are)."""
    bootstrap = strom_broker.bootstrap_servers
    _fill(bootstrap, 4_000)
    db, chk = tmp_path / "sensors.db", tmp_path / "chk"
    args = [STROM, "run", EXAMPLE, "--workers", "2", "--checkpoint-dir", str(chk),
            "--checkpoint-interval", "50ms", "--guarantee", "at-least-once"]  # fmt: skip
    env = _env(bootstrap, db, STROM_BOUNDED="1")
    with subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 60
        while not list(chk.glob("worker-1/chk-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "of 2 was killed by SIGKILL; restarting it from its last checkpoint" in err
    assert "[worker 1] resuming from checkpoint" in err
    assert _alive(workers[0]) is False and "stopping the others" not in err
    assert json.loads((chk / "run.json").read_text())["workers"] == 2
    listed = CliRunner().invoke(cli, ["checkpoints", "list", str(chk), "--json"]).output
    assert {m["worker"] for m in json.loads(listed)} == {0, 1}
    shown = CliRunner().invoke(cli, ["checkpoints", "show", str(chk)])
    assert shown.exit_code == 1 and "show one worker's" in shown.output
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bounded_db = tmp_path / "bounded.db"
    monkeypatch.setenv("STROM_SQLITE", str(bounded_db))
    run_bounded(runpy.run_path(EXAMPLE)["pipeline"])
    assert [r[:6] for r in _rows(db, WINDOWS_SQL)] == [
        r[:6] for r in _rows(bounded_db, WINDOWS_SQL)
    ]
    # a checkpoint directory keeps its worker count, and its kind
    again = CliRunner().invoke(
        cli, ["run", EXAMPLE, "--workers", "3", "--checkpoint-dir", str(chk)]
    )
    assert again.exit_code == 1 and "are of a run with --workers 2, not 3" in again.output
    single = CliRunner().invoke(cli, ["run", EXAMPLE, "--checkpoint-dir", str(chk)])
    assert (
        single.exit_code == 1 and "holds the checkpoints of a run with --workers" in single.output
    )


def test_workers_stop_when_their_supervisor_is_killed(strom_broker: Broker, tmp_path: Path) -> None:
    bootstrap = strom_broker.bootstrap_servers
    _fill(bootstrap, 40)
    with subprocess.Popen(
        [STROM, "run", EXAMPLE, "--workers", "2"],
        env=_env(bootstrap, tmp_path / "sensors.db"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        deadline = time.monotonic() + 30
        while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2
        proc.kill()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


NO_KEYS = """
import polars as pl
from strom.connectors import MemorySource, SQLiteSink
from strom.pipeline import Pipeline

pipeline = Pipeline()
rows = [[{"n": n} for n in range(p, 400, 4)] for p in range(4)]
pipeline.source(MemorySource([[r[i:i + 10] for i in range(0, 100, 10)] for r in rows])).filter(
    pl.col("n") % 3 == 0
).sink(SQLiteSink(__file__ + ".db", "out"))
"""


def test_workers_without_re_keying_share_partitions_and_one_sqlite_file(tmp_path: Path) -> None:
    """No keyed operator, so no repartition topic (and no Kafka) is needed; three processes
    write one SQLite file (WAL; a busy writer waits)."""
    path = tmp_path / "nokeys.py"
    path.write_text(NO_KEYS)
    done = subprocess.run(
        [STROM, "run", str(path), "--workers", "3"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    got = [r[0] for r in _rows(Path(str(path) + ".db"), "SELECT n FROM out ORDER BY n")]
    assert got == [n for n in range(400) if n % 3 == 0]
    assert "repartition topics: none" in done.stderr


def test_worker_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "nokeys.py"
    path.write_text(NO_KEYS)
    result = CliRunner().invoke(cli, ["run", str(path), "--workers", "2", "--worker-index", "1"])
    assert result.exit_code != 0 and "--worker-index needs --run-id" in result.output
    result = CliRunner().invoke(
        cli, ["run", str(path), "--workers", "2", "--worker-index", "2", "--run-id", "r"]
    )
    assert result.exit_code != 0 and "below --workers" in result.output


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _alive(pid: int) -> bool:
    """Running (a zombie awaiting its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
