"""``examples/fraud_scoring.py`` runs end to end and its self-checks pass, and would fail."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

EXAMPLE = Path(__file__).parents[2] / "examples" / "fraud_scoring.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fraud_scoring", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fraud_example_runs_and_checks_itself(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--dir", str(tmp_path), "--cards", "150", "--seed", "3"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checks: online == offline features, every score recomputed" in done.stdout
    assert "dead letters: 1" in done.stdout
    example = _module()
    with sqlite3.connect(tmp_path / "fraud.db") as conn:
        cards = conn.execute("SELECT count(*) FROM card_features").fetchone()[0]
        versions = conn.execute("SELECT DISTINCT model_version, feature_version FROM card_scores")
        assert versions.fetchall() == [(1, example.VIEW.version)]
        risk = conn.execute("SELECT count(*) FROM card_risk").fetchone()[0]
        assert cards == risk > 0  # one row per card: upserted, not appended
    # the checks catch a wrong online row and a wrong score
    from strom.ml import ModelStore

    store = ModelStore(tmp_path / "models")
    live = example.payments(150, 60, 4, start_ms=8 * 60 * example.MINUTE)
    assert example.check(store, live, tmp_path / "fraud.db") == []
    with sqlite3.connect(tmp_path / "fraud.db") as conn:
        conn.execute("UPDATE card_features SET payments = payments + 1 WHERE rowid = 1")
        conn.execute("UPDATE card_scores SET risk = risk / 2 + 0.01 WHERE rowid = 1")
    problems = example.check(store, live, tmp_path / "fraud.db")
    assert any("online features differ" in p for p in problems), problems
    assert any("scores of v1 differ" in p for p in problems), problems
