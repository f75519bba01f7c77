"""``strom models list|show|promote`` over a real model store (in-process CLI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner, Result
from sklearn.linear_model import LogisticRegression
from tests.ml.ml_helpers import training_frame

from strom.cli.main import cli
from strom.ml import ModelStore


def _strom(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    X, y = training_frame()
    store.register("fraud", LogisticRegression().fit(X, y), sample=X, alias="production",
                   metrics={"auc": 0.91})  # fmt: skip
    store.register("fraud", LogisticRegression(C=0.1).fit(X, y), sample=X, alias="staging")
    return store


def test_list_show_and_promote(tmp_path: Path) -> None:
    store = _store(tmp_path)
    where = ("--store", str(store.root))
    listed = _strom("models", "list", *where)
    assert listed.exit_code == 0, listed.output
    assert "fraud" in listed.output and "production=1, staging=2" in listed.output
    as_json = json.loads(_strom("models", "list", *where, "--json").output)
    assert as_json == [{"name": "fraud", "versions": [1, 2],
                        "aliases": {"production": 1, "staging": 2}}]  # fmt: skip
    shown = _strom("models", "show", "fraud", "production", *where, "--verify")
    assert shown.exit_code == 0, shown.output
    assert "model fraud v1 (production)" in shown.output
    assert "amount: Float64, count: Int64" in shown.output and "auc=0.91" in shown.output
    assert "verified:" in shown.output
    meta = json.loads(_strom("models", "show", "fraud", "2", *where, "--json").output)
    assert meta["version"] == 2 and meta["aliases"] == ["staging"]
    promoted = _strom("models", "promote", "fraud", "2", *where)
    assert promoted.exit_code == 0, promoted.output
    assert promoted.output.strip() == "fraud: production -> v2 (was v1)"
    assert store.aliases("fraud") == {"production": 2, "staging": 2}


def test_errors_name_the_model_and_file(tmp_path: Path) -> None:
    store = _store(tmp_path)
    where = ("--store", str(store.root))
    missing = _strom("models", "promote", "fraud", "9", *where)
    assert missing.exit_code == 1 and "has no version 9" in missing.output
    path = store.root / "fraud" / "v2" / "model.skops"
    os.chmod(path, 0o644)
    path.write_bytes(b"garbage")
    bad = _strom("models", "promote", "fraud", "2", *where)
    assert bad.exit_code == 1
    assert "model 'fraud' v2" in bad.output and "model.skops has sha256" in bad.output
    assert store.aliases("fraud")["production"] == 1  # nothing moved
    nowhere = _strom("models", "list", "--store", str(tmp_path / "nope"))
    assert nowhere.exit_code == 1 and "does not exist" in nowhere.output
