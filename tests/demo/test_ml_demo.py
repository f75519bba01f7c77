"""``strom demo`` runs the whole ML loop and checks itself; its checks catch a tampered result."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skops")
pytest.importorskip("river")

from strom import Broker
from strom.demo import ml_check, ml_data
from strom.demo.check import read_table
from strom.demo.ml_db import Database
from strom.ml import ModelStore, training_set

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))  # the PostgreSQL fixtures
from postgres_server import postgres_dsn, postgres_server

__all__ = ["postgres_dsn", "postgres_server"]  # fixtures used here

STROM = shutil.which("strom") or str(Path(sys.executable).with_name("strom"))
ROWS, DEVICES, SEED = 8_000, 12, 5


def test_the_shuttle_data_is_the_bundled_one_and_the_layout_is_seeded(tmp_path: Path) -> None:
    shuttle = ml_data.load_shuttle()
    assert (shuttle.height, int(shuttle["anomaly"].sum())) == (49_097, 3_511)
    a, b = (ml_data.lay_out(shuttle.head(3_000), 6, 1) for _ in range(2))
    assert a.history.equals(b.history) and a.live.equals(b.live)
    assert not ml_data.lay_out(shuttle.head(3_000), 6, 2).history.equals(a.history)
    # every reading once, history before live, no window spanning the cut
    assert a.history.height + a.live.height == 3_000
    last, first = a.history["ts"].max(), a.live["ts"].min()
    assert last < first and last // ml_data.WINDOW_MS < first // ml_data.WINDOW_MS
    paths = ml_data.write_history(a.history, tmp_path)
    hours = a.history.select("device", (a.history["ts"] - ml_data.T0) // 3_600_000).unique()
    assert len(paths) == hours.height
    records = ml_data.live_records(a.live, a.devices, 1)
    assert records.malformed > 0 and records.late.len() > 0
    assert len(records.values) == a.live.height + records.malformed + ml_data.PARTITIONS


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("demo-ml")
    done = subprocess.run(
        [STROM, "demo", "--rows", str(ROWS), "--devices", str(DEVICES), "--seed",
         str(SEED), "--live-seconds", "3", "--data-dir", str(workdir)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir, done.stdout


def test_strom_demo_runs_the_ml_loop_and_its_checks_pass(demo_dir: tuple[Path, str]) -> None:
    _, out = demo_dir
    assert "history written to" in out and "Parquet files (per device and hour)" in out
    assert "registered shuttle v1" in out and "v2 promoted halfway" in out
    for line in ("precision", "recall", "ROC AUC", "latency p50", "latency p99"):
        assert line in out, out
    assert "version switch" in out and "v1 x" in out and "-> v2 x" in out, out
    assert "checks passed: online == offline features; every score recomputed" in out
    assert "lineage" in out


def test_a_tampered_result_fails_the_checks(demo_dir: tuple[Path, str]) -> None:
    workdir, _ = demo_dir
    layout = ml_data.lay_out(ml_data.load_shuttle(ROWS), DEVICES, SEED)
    records = ml_data.live_records(layout.live, layout.devices, SEED)
    store = ModelStore(workdir / "models")
    db = workdir / "ml.db"
    with Broker(workdir / "broker") as broker:  # the run's log, reopened: the alerts topic
        outcome = ml_check.read_outcome(Database(db), broker.bootstrap_servers)
    assert ml_check.verify(store, layout.live, records, outcome, 1) == []
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE predictions SET score = score / 2 + 0.01 WHERE rowid = 1")
        conn.execute("UPDATE predictions SET mean_f3 = mean_f3 + 1 WHERE rowid = 2")
        conn.execute("UPDATE predictions SET model_version = 2 WHERE rowid = 3")
        conn.execute("UPDATE device_features SET readings = readings + 1 WHERE rowid = 1")
        conn.execute("UPDATE predictions SET _offset = _offset - 1 WHERE rowid = 4")
    tampered = ml_check.Outcome(
        predictions=read_table(db, "predictions"),
        online=read_table(db, "device_features"),
        late_seqs=outcome.late_seqs,
        dead_letters=outcome.dead_letters - 1,
        alerts=outcome.alerts,
        readings=outcome.readings,
    )
    problems = ml_check.verify(store, layout.live, records, tampered, 1)
    text = "\n".join(problems)
    assert "online features differ from offline in 1 window(s)" in text, text
    assert "score(s) of v1 differ from v1 recomputed" in text, text
    assert "model versions in write order go v1 x2 -> v2 x1 -> v1" in text, text
    assert "the online feature table is not each device's latest offline window" in text, text
    assert "dead letters" in text, text
    assert "1 prediction(s) do not name their window's latest reading" in text, text


def test_the_training_check_recounts_from_the_raw_readings() -> None:
    from strom.demo import ml_loop

    layout = ml_data.lay_out(ml_data.load_shuttle(3_000), 6, 1)
    features = ml_loop.VIEW.compute_frame(layout.history.select(*ml_data.READING))
    labels = ml_loop.window_labels(layout.history).drop("window_start")
    data = training_set(labels, features, keys="device", label_time="label_time",
                        ttl=ml_data.WINDOW_MS, columns=ml_loop.FEATURES)  # fmt: skip
    assert ml_check.verify_training(layout.history, data) == []
    # features of the window after the label (a leak), or a wrong value: both caught
    leaked = data.with_columns(pl.col("label_time") - ml_data.WINDOW_MS)
    assert ml_check.verify_training(layout.history, leaked) != []
    wrong = data.with_columns(pl.col("max_f1") + (pl.int_range(pl.len()) == 0))
    assert ml_check.verify_training(layout.history, wrong) == [
        "1 training row(s) differ from the raw readings' recount"
    ]


def test_strom_demo_writes_its_tables_to_postgres(postgres_dsn: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [STROM, "demo", "--rows", "4000", "--devices", "6", "--live-seconds", "2",
         "--postgres", postgres_dsn, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "JOIN devices in PostgreSQL" in done.stdout
    assert "checks passed: online == offline features" in done.stdout
    assert not (tmp_path / "ml.db").exists()
    import psycopg

    with psycopg.connect(postgres_dsn) as conn:
        online = conn.execute("SELECT count(*) FROM device_features").fetchone()
        scored = conn.execute("SELECT count(DISTINCT model_version) FROM predictions").fetchone()
    assert online == (6,) and scored == (2,)
