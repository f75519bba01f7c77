"""The ML demo's steps: backfill features over the history files, train and register two models,
stream the live part through Kafka and score it, promoting the second model mid-stream.

One :data:`VIEW` (per device, 2-minute tumbling windows: readings, and the mean and maximum of
each sensor) builds the training data (bounded, over the Parquet files) and serves the live
features (streaming, from Kafka): the same definition, the same version on every row.
A window's label is whether any of its readings is one of the data set's anomalies; a window
is scored when it closes, with its own features (the detector's question: "did this device's
last two minutes look anomalous?").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from confluent_kafka import Producer

from strom import (
    FileSource,
    KafkaSink,
    KafkaSource,
    Pipeline,
    StreamingExecutor,
    Tumbling,
    agg,
)
from strom.demo.ml_data import (
    END_DEVICE,
    OUT_OF_ORDER_MS,
    READING,
    SENSORS,
    WINDOW_MS,
    LiveRecords,
)
from strom.demo.ml_db import Database
from strom.demo.view import CallbackSink
from strom.ml import FeatureView, ModelStore, training_set
from strom.ml.features import LINEAGE

MODEL = "shuttle"
READINGS_TOPIC = "shuttle-readings"
ALERTS_TOPIC = "shuttle-alerts"
THRESHOLD = 0.5
#: Records per poll: small, so the watermark moves in small steps (late readings are judged
#: against the watermark from before their batch).
MAX_BATCH = 500

VIEW = FeatureView(
    "device_2m",
    keys=("device",),
    window=Tumbling(WINDOW_MS),
    aggs=(
        agg.count(name="readings"),
        *(agg.mean(s) for s in SENSORS),
        *(agg.max(s) for s in SENSORS),
    ),
    timestamp="ts",
    input_schema=READING,
)
FEATURES = VIEW.feature_names


def window_labels(readings: pl.DataFrame) -> pl.DataFrame:
    """Per device and window of ``readings``: ``window_start``, ``label_time`` (the window's
    end: the label is known once it closes) and ``anomaly`` (any of its readings is one)."""
    return (
        readings.with_columns(window_start=pl.col("ts") - pl.col("ts") % WINDOW_MS)
        .group_by("device", "window_start")
        .agg(pl.col("anomaly").any())
        .with_columns(label_time=pl.col("window_start") + WINDOW_MS)
        .sort("label_time", "device")
    )


def backfill(folder: Path, devices: list[str], progress: Callable[[], None]) -> pl.DataFrame:
    """The view over ``folder/<device>/*.parquet`` with the bounded engine, device by device
    (windows are per device, so each device's run is independent); ``progress()`` after each."""
    frames = []
    for device in devices:
        source = FileSource(str(folder / device / "*.parquet"), "parquet", partitions=2)
        frames.append(VIEW.compute(source))
        progress()
    return pl.concat(frames).sort("window_end", "device")


@dataclass(frozen=True)
class Trained:
    """The training set and the two registered versions (v1 production, v2 staging)."""

    data: pl.DataFrame  # device, label_time, anomaly, the features, feature_time
    positives: int
    first: int
    second: int
    holdout_auc: dict[int, float]


def train(store: ModelStore, history: pl.DataFrame, features: pl.DataFrame, seed: int) -> Trained:
    """Point-in-time training data from the backfilled ``features`` and the history's labels;
    v1 a logistic regression (``production``), v2 a random forest (``staging``)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = window_labels(history).drop("window_start")
    data = training_set(labels, features, keys="device", label_time="label_time",
                        ttl=WINDOW_MS, columns=FEATURES).drop_nulls(FEATURES)  # fmt: skip
    cut = int(data["label_time"].quantile(0.8))  # type: ignore[arg-type]
    fit = data.filter(pl.col("label_time") < cut)
    test = data.filter(pl.col("label_time") >= cut)
    candidates = [
        ("production", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2_000))),
        ("staging", RandomForestClassifier(n_estimators=40, max_depth=8, random_state=seed)),
    ]
    versions, aucs = [], {}
    span = (int(history["ts"].min()), int(history["ts"].max()))  # type: ignore[arg-type]
    for alias, model in candidates:
        model.fit(fit.select(FEATURES).to_numpy(), fit["anomaly"].to_numpy())
        auc = float(
            roc_auc_score(
                test["anomaly"].to_numpy(),
                model.predict_proba(test.select(FEATURES).to_numpy())[:, 1],
            )
        )
        meta = store.register(
            MODEL,
            model,
            sample=fit.select(FEATURES),
            metrics={"holdout_auc": auc, "train_rows": fit.height},
            training_range=span,
            feature_version=VIEW.version,
            description="anomaly in a device's closed 2-minute window (NASA Shuttle sensors)",
            alias=alias,
        )
        versions.append(meta.version)
        aucs[meta.version] = auc
    return Trained(data, int(data["anomaly"].sum()), versions[0], versions[1], aucs)


def build(
    bootstrap: str, store: ModelStore, db: Database, on_scores: Callable[[pl.DataFrame], None]
) -> tuple[Pipeline, KafkaSource]:
    """Kafka → the view → online features (``db``, upserted per device) and scores (``db``,
    every window; ``on_scores``), alerts → Kafka, late readings and dead letters → ``db``."""
    source = KafkaSource(bootstrap, READINGS_TOPIC, schema=READING, max_batch_records=MAX_BATCH,
                         dead_letter=db.sink("dead_letters"))  # fmt: skip
    p = Pipeline()
    readings = p.source(source, timestamp="ts", max_out_of_orderness_ms=OUT_OF_ORDER_MS)
    # the END_DEVICE markers only move the watermark past the last windows
    # _topic, _partition and _offset kept: each window names its latest record (lineage)
    windows = VIEW.apply(readings.select(*READING, *LINEAGE).filter(pl.col("device") != END_DEVICE))
    windows.sink(db.sink("device_features", key=["device"]))
    windows.late().sink(db.sink("late_readings"))
    scores = windows.predict(store, MODEL, output="score", feature_version=VIEW.version)
    scores.sink(db.sink("predictions"))
    scores.sink(CallbackSink(on_scores))
    alerts = scores.filter(pl.col("score") >= THRESHOLD)
    alerts.select("device", "window_start", "window_end", "score", "model_version").sink(
        # log_level 3: errors only (not librdkafka's notice when the broker stops)
        KafkaSink(bootstrap, ALERTS_TOPIC, key="device", producer_config={"log_level": 3})
    )
    return p, source


@dataclass
class LiveRun:
    """What the live phase recorded: each record's produce wall time, each scored batch's
    write wall time, and when the promotion happened."""

    sent_s: np.ndarray
    scored: list[pl.DataFrame] = field(default_factory=list)
    promoted_after: int = -1  # windows scored before the promotion
    seconds: float = 0.0

    def on_scores(self, batch: pl.DataFrame) -> None:
        now = time.time()
        self.scored.append(
            batch.select("device", "window_start", "window_end", "model_version").with_columns(
                written_s=pl.lit(now)
            )
        )

    @property
    def windows_scored(self) -> int:
        return sum(f.height for f in self.scored)


def stream_live(
    bootstrap: str,
    store: ModelStore,
    db: Database,
    records: LiveRecords,
    *,
    seconds: float,
    promote_to: int,
    progress: Callable[[int, int], None],
) -> LiveRun:
    """Produce ``records`` paced over ``seconds`` in a thread while the pipeline runs here;
    promote ``promote_to`` once half are produced; stop when every record was read."""
    n = len(records.values)
    run = LiveRun(sent_s=np.zeros(n))
    pipeline, source = build(bootstrap, store, db, run.on_scores)
    ends: dict[int, int] = {}
    produced = [0]
    failures: list[BaseException] = []

    def produce() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "log_level": 3})

        def delivered(error: object, message: object) -> None:
            if error is None:
                p, o = message.partition(), message.offset()  # type: ignore[attr-defined]
                ends[p] = max(ends.get(p, 0), o + 1)

        try:
            start = time.time()
            for i in range(n):
                due = start + seconds * i / n
                if (wait := due - time.time()) > 0:
                    time.sleep(wait)
                run.sent_s[i] = time.time()
                partition = int(records.partition[i])
                producer.produce(READINGS_TOPIC, records.values[i], records.keys[i],
                                 partition=partition, on_delivery=delivered)  # fmt: skip
                producer.poll(0)
                produced[0] = i + 1
            if producer.flush(30):
                raise RuntimeError("the live readings were not all delivered")
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=produce, name="strom-demo-ml-producer", daemon=True)
    executor = StreamingExecutor(pipeline)
    executor.step()  # open the pipeline (sources, sinks, the model) before the first event
    started = time.time()
    thread.start()
    try:
        while True:
            executor.step()
            progress(produced[0], run.windows_scored)
            if run.promoted_after < 0 and produced[0] >= n // 2:
                run.promoted_after = run.windows_scored
                store.promote(MODEL, promote_to, "production")
            if failures:
                raise RuntimeError(f"producing the live readings failed: {failures[0]!r}")
            if not thread.is_alive() and ends:
                positions = source.positions()
                if all(positions.get(p, 0) >= end for p, end in ends.items()):
                    break
            if time.time() - started > seconds + 120:
                raise RuntimeError("the pipeline did not read every live record within 2 minutes")
    finally:
        executor.close()
        thread.join()
    run.seconds = time.time() - started
    return run
