"""The ML benchmark's events, feature view, model and reference scores (strom's side).

Events (:func:`events`) are seeded sensor readings: :data:`DEVICES` devices, each reading at a
random device, event time rising by the same step (so every partition is in time order); a
device-window is anomalous with probability 5 % (hotter, shaking more). :data:`VIEW` is the
feature step of :mod:`benchmarks.ml.children._ml_common` as a strom :class:`~strom.ml.FeatureView`;
:func:`reference_features` computes it with plain Polars. :func:`train` fits a small, deterministic
scikit-learn model on other seeded events and registers it in a :class:`~strom.ml.ModelStore`:
strom loads it from there, the peers load the same ``model.skops`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.ml.children._ml_common import END_PREFIX, FEATURES, WINDOW_MS
from strom import Tumbling, agg
from strom.ml import FeatureView, ModelStore

__all__ = [
    "DEVICES",
    "END_PREFIX",
    "EVENT",
    "FEATURES",
    "MODEL",
    "VIEW",
    "WINDOW_MS",
    "device_name",
    "end_records",
    "events",
    "reference_features",
    "reference_scores",
    "train",
]

DEVICES = 64
MODEL = "sensor-anomaly"
EVENT = {
    "device": pl.String(),
    "ts": pl.Int64(),
    "temperature": pl.Float64(),
    "vibration": pl.Float64(),
}
#: The first event time of a generated run (2024-01-01): any fixed epoch would do.
START_MS = 1_704_067_200_000
VIEW = FeatureView(
    "device_window",
    keys=("device",),
    window=Tumbling(WINDOW_MS),
    aggs=(
        agg.count(name="readings"),
        agg.mean("temperature"),
        agg.max("temperature"),
        agg.mean("vibration"),
        agg.max("vibration"),
    ),
    timestamp="ts",
    input_schema=EVENT,
)
assert tuple(VIEW.feature_names) == FEATURES, "the view and the children's contract disagree"


def device_name(index: int) -> str:
    return f"d{index:02d}"


def events(n: int, seed: int, rate: int = 5_000, start_ms: int = START_MS) -> pl.DataFrame:
    """``n`` readings at ``rate`` a second of event time from ``start_ms``, columns of
    :data:`EVENT` plus ``anomaly`` (whether the reading's device-window is anomalous)."""
    rng = np.random.default_rng(seed)
    device = rng.integers(0, DEVICES, n)
    ts = start_ms + np.arange(n, dtype=np.int64) * 1000 // rate
    window = ts // WINDOW_MS
    # anomalous device-windows: a hash of (device, window, seed), so every reading agrees
    mixed = (device.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ window.astype(np.uint64)
    anomaly = (mixed * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(seed)) % np.uint64(100) < 5
    base = 20.0 + device * 0.1
    temperature = base + rng.normal(0.0, 1.0, n) + np.where(anomaly, 4.0, 0.0)
    vibration = np.abs(rng.normal(0.3, 0.1, n)) * np.where(anomaly, 2.5, 1.0)
    names = np.array([device_name(i) for i in range(DEVICES)])
    return pl.DataFrame(
        {
            "device": names[device],
            "ts": ts,
            "temperature": temperature.round(3),
            "vibration": vibration.round(4),
            "anomaly": anomaly,
        }
    )


def end_records(last_ts: int, partitions: int) -> list[dict[str, Any]]:
    """One record per partition (partition ``p`` gets the ``p``-th), past every window of
    events up to ``last_ts``: it closes them on each engine and is never scored."""
    ts = last_ts + 2 * WINDOW_MS
    return [
        {"device": f"{END_PREFIX}{p}", "ts": ts, "temperature": 0.0, "vibration": 0.0}
        for p in range(partitions)
    ]


def reference_features(frame: pl.DataFrame) -> pl.DataFrame:
    """The feature step in plain Polars: ``device``, ``window_end`` and :data:`FEATURES`."""
    return (
        frame.filter(~pl.col("device").str.starts_with(END_PREFIX))
        .group_by("device", window_end=pl.col("ts") // WINDOW_MS * WINDOW_MS + WINDOW_MS)
        .agg(
            readings=pl.len(),
            mean_temperature=pl.col("temperature").mean(),
            max_temperature=pl.col("temperature").max(),
            mean_vibration=pl.col("vibration").mean(),
            max_vibration=pl.col("vibration").max(),
            anomaly=pl.col("anomaly").any() if "anomaly" in frame.columns else pl.lit(None),
        )
        .sort("window_end", "device")
    )


def reference_scores(model: Any, features: pl.DataFrame) -> np.ndarray:
    """``model.predict_proba`` of the positive class over ``features`` (one call)."""
    return np.asarray(model.predict_proba(features.select(FEATURES).to_numpy())[:, 1])


def train(store_dir: Path, seed: int = 7) -> tuple[ModelStore, Path, Any]:
    """Fit the model on seeded events of its own, register it (alias ``production``);
    (the store, the version's ``model.skops``, the fitted model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = reference_features(events(200_000, seed))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000))
    model.fit(features.select(FEATURES).to_numpy().astype(np.float64), features["anomaly"])
    store = ModelStore(store_dir)
    sample = features.select(FEATURES).with_columns(pl.col("readings").cast(pl.Int64))
    meta = store.register(
        MODEL,
        model,
        sample=sample,
        feature_version=VIEW.version,
        description="a device-window's anomaly",
        alias="production",
    )
    return store, store_dir / MODEL / f"v{meta.version}" / "model.skops", model
