"""The model store: versions are immutable and verified on load, aliases move atomically, and
every kind of bad model file fails with an error naming the model, the version and the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tests.ml.ml_helpers import ThresholdModel, training_frame

from strom.ml import ModelError, ModelStore


def test_register_load_and_metadata(fraud_store: ModelStore) -> None:
    assert fraud_store.names() == ["fraud"]
    assert fraud_store.versions("fraud") == [1, 2]
    assert fraud_store.aliases("fraud") == {"production": 1, "staging": 2}
    meta = fraud_store.info("fraud", 1)
    assert meta.feature_names == ["amount", "count"]
    assert [f.dtype for f in meta.features] == ["Float64", "Int64"]
    assert meta.method == "predict_proba"
    assert meta.metrics == {"auc": 0.9}
    assert meta.training_range == ("0", "1000")
    assert meta.code_version == "abc123" and meta.feature_version == "fv1"
    assert set(meta.files) == {"model.skops", "golden.parquet"}
    assert meta.libraries["scikit-learn"]
    X, _ = training_frame()
    fresh = ModelStore(fraud_store.root)  # another process's view: reads and verifies the files
    model = fresh.get("fraud", "production")
    assert model.version == 1
    expected = fresh.load("fraud", 1).model.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(model.score(X), expected)
    assert fresh.get("fraud", "staging").version == 2
    assert fresh.resolve("fraud", "latest") == 2
    assert fresh.resolve("fraud", "v1") == fresh.resolve("fraud", 1) == 1


def test_versions_are_read_only_and_numbered_without_collisions(store: ModelStore) -> None:
    X, y = training_frame()
    model = LogisticRegression().fit(X, y)
    results: list[int] = []

    def register() -> None:
        results.append(store.register("m", model, sample=X).version)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [1, 2, 3, 4]
    assert store.versions("m") == [1, 2, 3, 4]
    for file in (store.root / "m" / "v1").iterdir():
        assert not os.access(file, os.W_OK) or os.geteuid() == 0
        assert file.stat().st_mode & 0o222 == 0
    assert not [p for p in (store.root / "m").iterdir() if p.name.startswith(".tmp")]


def test_promote_moves_an_alias_atomically_and_keeps_history(fraud_store: ModelStore) -> None:
    token = fraud_store.changed("fraud")
    assert fraud_store.promote("fraud", 2) == 2
    assert fraud_store.aliases("fraud")["production"] == 2
    assert fraud_store.changed("fraud") != token
    assert [(h["alias"], h["version"]) for h in fraud_store.history("fraud")] == [
        ("production", 1), ("staging", 2), ("production", 2)
    ]  # fmt: skip
    leftovers = [p.name for p in (fraud_store.root / "fraud").iterdir() if "aliases-" in p.name]
    assert leftovers == []
    with pytest.raises(ModelError, match="has no version 7"):
        fraud_store.promote("fraud", 7)
    with pytest.raises(ModelError, match="alias 'Prod!'"):
        fraud_store.promote("fraud", 1, "Prod!")


def test_unknown_names_versions_and_aliases(fraud_store: ModelStore) -> None:
    with pytest.raises(ModelError, match=r"no model named 'nope'.*models: \['fraud'\]"):
        fraud_store.resolve("nope", "production")
    with pytest.raises(ModelError, match=r"has no version 9 \(versions: \[1, 2\]\)"):
        fraud_store.load("fraud", 9)
    with pytest.raises(ModelError, match=r"has no alias 'canary'.*strom models promote"):
        fraud_store.resolve("fraud", "canary")
    with pytest.raises(ValueError, match="only local directories"):
        ModelStore("s3://bucket/models")
    assert ModelStore(f"file://{fraud_store.root}").versions("fraud") == [1, 2]


def _writable(path: Path) -> Path:
    os.chmod(path, 0o644)
    return path


def test_a_corrupt_model_file_is_named(fraud_store: ModelStore) -> None:
    path = _writable(fraud_store.root / "fraud" / "v1" / "model.skops")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model 'fraud' v1: .*model\.skops has sha256 .* corrupt"):
        ModelStore(fraud_store.root).load("fraud", 1)
    with pytest.raises(ModelError, match="corrupt"):
        ModelStore(fraud_store.root).promote("fraud", 1)


def _replace_file(store: ModelStore, version: int, file: str, data: bytes) -> None:
    """Swap a version's file and its recorded hash (what a hostile or buggy writer could do):
    the load checks after the hash must still catch it."""
    folder = store.root / "fraud" / f"v{version}"
    _writable(folder / file).write_bytes(data)
    meta_path = _writable(folder / "meta.json")
    meta = json.loads(meta_path.read_text())
    import hashlib

    meta["files"][file] = hashlib.sha256(data).hexdigest()
    meta_path.write_text(json.dumps(meta))


def test_a_file_of_the_wrong_kind_is_named(fraud_store: ModelStore, tmp_path: Path) -> None:
    _replace_file(fraud_store, 1, "model.skops", b"PK\x03\x04 but not a zip at all")
    with pytest.raises(ModelError, match=r"model 'fraud' v1: .*model\.skops is not a skops"):
        ModelStore(fraud_store.root).load("fraud", 1)
    sio.dump({"weights": [1, 2]}, tmp_path / "dict.skops")
    _replace_file(fraud_store, 2, "model.skops", (tmp_path / "dict.skops").read_bytes())
    with pytest.raises(ModelError, match="model 'fraud' v2 is a dict, which has no predict_proba"):
        ModelStore(fraud_store.root).load("fraud", 2)


def test_a_model_expecting_other_features_is_named(fraud_store: ModelStore, tmp_path: Path) -> None:
    X, y = training_frame()
    other = LogisticRegression().fit(X.rename({"count": "n_payments"}), y)
    sio.dump(other, tmp_path / "other.skops")
    _replace_file(fraud_store, 1, "model.skops", (tmp_path / "other.skops").read_bytes())
    with pytest.raises(
        ModelError, match=r"v1 was fitted on features \['amount', 'n_payments'\].*'count'"
    ):
        ModelStore(fraud_store.root).load("fraud", 1)


def test_a_changed_model_fails_its_golden_sample(fraud_store: ModelStore, tmp_path: Path) -> None:
    X, y = training_frame(seed=5)
    sio.dump(LogisticRegression(C=0.01).fit(X, y), tmp_path / "other.skops")
    _replace_file(fraud_store, 1, "model.skops", (tmp_path / "other.skops").read_bytes())
    with pytest.raises(ModelError, match=r"v1: the golden sample's row \d+ scores"):
        ModelStore(fraud_store.root).load("fraud", 1)


def test_untrusted_types_are_refused_by_name(store: ModelStore) -> None:
    X, y = training_frame()
    model = ThresholdModel().fit(X, y)
    name = "tests.ml.ml_helpers.ThresholdModel"
    with pytest.raises(ModelError, match=rf"holds types that are not trusted: \['{name}'\]"):
        store.register("custom", model, sample=X)
    assert store.versions("custom") == []
    trusting = ModelStore(store.root, trusted=[name])
    assert trusting.register("custom", model, sample=X).version == 1
    # the trust is the loading program's, never the file's: a store without it refuses
    with pytest.raises(ModelError, match=r"v1: .*model\.skops holds types that are not trusted"):
        ModelStore(store.root).load("custom", 1)
    assert ModelStore(store.root, trusted=[name]).load("custom", 1).score(X.head(2)).shape == (2,)


def test_register_refuses_bad_models_and_samples(store: ModelStore) -> None:
    X, y = training_frame()
    with pytest.raises(ModelError, match="StandardScaler is not a model"):
        store.register("m", StandardScaler().fit(X), sample=X)
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ModelError, match=r"fitted on features \['amount', 'count'\].*\['count'"):
        store.register("m", model, sample=X.select("count", "amount"))
    with pytest.raises(ModelError, match=r"features \['nope'\] are not columns"):
        store.register("m", model, sample=X, features=["amount", "nope"])
    with pytest.raises(ModelError, match="no rows"):
        store.register("m", model, sample=X.clear())
    with pytest.raises(ModelError, match="model name 'a b'"):
        store.register("a b", model, sample=X)
    assert store.versions("m") == []


def test_importing_strom_ml_loads_no_ml_library() -> None:
    code = (
        "import sys, strom, strom.ml\n"
        "p = strom.Pipeline()\n"
        "print(','.join(m for m in ('sklearn', 'skops', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_tree_models_need_only_the_documented_trust(store: ModelStore) -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = training_frame()
    store.register("gb", GradientBoostingClassifier(n_estimators=5).fit(X.to_numpy(), y), sample=X)
    assert ModelStore(store.root).get("gb", "latest").score(X.head(4)).shape == (4,)
    with zipfile.ZipFile(store.root / "gb" / "v1" / "model.skops") as z:
        assert "schema.json" in z.namelist()
    assert pl.read_parquet(store.root / "gb" / "v1" / "golden.parquet").height == 32
