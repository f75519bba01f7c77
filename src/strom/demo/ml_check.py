"""The ML demo's checks and measurements, from what the run left in SQLite and Kafka.

Checks (one sentence per mismatch; the demo exits 1 on any):

- **point in time**: every training row's features recounted with Polars alone from the raw
  history readings of its device in the window before its label's time (none at or after it);
- only readings produced late went late, and each malformed record is one dead letter;
- **online == offline features**: every scored window's features equal the view computed
  offline (bounded, over the same live readings minus the late ones), window for window, and the
  online table holds each device's latest window;
- **every score recomputed**: each prediction's score equals the model version its row names
  scoring the offline features of the same window; every row names the view's version;
- **lineage**: each prediction's ``_partition``/``_offset`` name a record of the readings topic
  (read back from the broker) that is its window's latest counted reading;
- the versions change once, from the first to the promoted one, never back;
- the alerts topic holds exactly the predictions at or above the threshold.

Measured: precision, recall and ROC AUC of the scores against the windows' labels; latency
from the produce time of the record that moved the watermark past a window's end to the write of
that window's prediction.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import polars as pl

from strom import KafkaSource, MemorySink
from strom.demo.ml_data import (
    OUT_OF_ORDER_MS,
    PARTITIONS,
    READING,
    SENSORS,
    WINDOW_MS,
    LiveRecords,
)
from strom.demo.ml_db import Database
from strom.demo.ml_loop import (
    ALERTS_TOPIC,
    FEATURES,
    MODEL,
    READINGS_TOPIC,
    THRESHOLD,
    VIEW,
    window_labels,
)
from strom.ml import ModelStore

KEY = ["device", "window_start"]
ALERT = pl.Schema(
    {
        "device": pl.String(),
        "window_start": pl.Int64(),
        "window_end": pl.Int64(),
        "score": pl.Float64(),
        "model_version": pl.Int64(),
    }
)


@dataclass(frozen=True)
class Outcome:
    """The run's outputs, read back."""

    predictions: pl.DataFrame  # in write order
    online: pl.DataFrame
    late_seqs: set[int]
    dead_letters: int
    alerts: pl.DataFrame
    readings: pl.DataFrame  # the readings topic as the broker holds it: READING + lineage


def read_outcome(db: Database, bootstrap: str) -> Outcome:
    def table(name: str) -> pl.DataFrame:
        found = db.read(name)
        return found if found is not None else pl.DataFrame()

    late = table("late_readings")
    with KafkaSource(bootstrap, ALERTS_TOPIC, schema=ALERT, bounded=True) as source:
        frames = [source.scan_partition(i).collect() for i in range(source.partition_count())]
    malformed = MemorySink()
    with KafkaSource(
        bootstrap, READINGS_TOPIC, schema=READING, bounded=True, dead_letter=malformed
    ) as source:
        readings = [source.scan_partition(i).collect() for i in range(source.partition_count())]
    return Outcome(
        predictions=table("predictions"),
        online=table("device_features"),
        late_seqs=set(late["seq"].to_list()) if late.height else set(),
        dead_letters=table("dead_letters").height,
        alerts=pl.concat(frames).select(*ALERT),
        readings=pl.concat(readings).select(*READING, "_partition", "_offset"),
    )


def offline_features(live: pl.DataFrame, late_seqs: set[int]) -> pl.DataFrame:
    """The view over the live readings the stream counted (all but the late ones), bounded."""
    counted = live.filter(~pl.col("seq").is_in(sorted(late_seqs)))
    return VIEW.compute_frame(counted.select(*READING))


def verify_training(history: pl.DataFrame, data: pl.DataFrame) -> list[str]:
    """Recount each training row's features from the readings in ``[label_time - window,
    label_time)`` of its device (no strom code); every difference is a problem."""
    start = pl.col("ts") - pl.col("ts") % WINDOW_MS
    recount = history.group_by("device", (start + WINDOW_MS).alias("label_time")).agg(
        pl.len().cast(pl.Int64).alias("readings"),
        *(pl.col(s).mean().alias(f"mean_{s}") for s in SENSORS),
        *(pl.col(s).max().alias(f"max_{s}") for s in SENSORS),
    )
    joined = data.join(recount, on=["device", "label_time"], how="left", suffix="_raw")
    problems = []
    if joined["readings_raw"].null_count() or (joined["feature_time"] > joined["label_time"]).any():
        problems.append("training rows whose features are not from the window before the label")
    a = joined.select(FEATURES).to_numpy()
    b = joined.select(f"{f}_raw" for f in FEATURES).to_numpy()
    differ = ~np.isclose(a, b, rtol=1e-9, atol=1e-9).all(axis=1)
    if differ.any():
        problems.append(
            f"{int(differ.sum())} training row(s) differ from the raw readings' recount"
        )
    return problems


def verify(
    store: ModelStore, live: pl.DataFrame, records: LiveRecords, outcome: Outcome, first: int
) -> list[str]:
    """Every way the outcome differs from the offline recomputation (empty: none)."""
    problems = []
    wrongly_late = outcome.late_seqs - set(records.late.to_list())
    if wrongly_late:
        problems.append(f"{len(wrongly_late)} reading(s) went late that were produced on time")
    if outcome.dead_letters != records.malformed:
        problems.append(f"dead letters: {outcome.dead_letters}, malformed: {records.malformed}")
    offline = offline_features(live, outcome.late_seqs)
    streamed = outcome.predictions
    if streamed.height == 0:
        return [*problems, "no window was scored"]
    joined = offline.join(streamed, on=KEY, how="full", suffix="_online", coalesce=True)
    missing = joined.filter(pl.col("score").is_null()).height
    extra = joined.filter(pl.col("readings").is_null()).height
    if missing or extra or streamed.height != offline.height:
        problems.append(
            f"windows: {offline.height} offline, {streamed.height} scored "
            f"({missing} missing, {extra} unexpected)"
        )
    both = joined.drop_nulls(["score", "readings"])
    a = both.select(FEATURES).to_numpy()
    b = both.select(f"{f}_online" for f in FEATURES).to_numpy()
    differ = ~np.isclose(a, b, rtol=1e-9, atol=1e-9).all(axis=1)
    if differ.any():
        problems.append(f"online features differ from offline in {int(differ.sum())} window(s)")
    latest = offline.sort("window_end").group_by("device").last().sort("device")
    online = outcome.online.sort("device") if outcome.online.height else outcome.online
    if online.height != latest.height or not np.allclose(
        online.select("window_start", *FEATURES).to_numpy(),
        latest.select("window_start", *FEATURES).to_numpy(),
    ):
        problems.append("the online feature table is not each device's latest offline window")
    if set(streamed["feature_version"].unique()) != {VIEW.version}:
        problems.append(f"feature versions {set(streamed['feature_version'])} != {VIEW.version}")
    for (version,), rows in both.group_by("model_version"):
        model = store.load(MODEL, int(version))
        expected = model.score(rows.select(FEATURES))
        bad = int((~np.isclose(rows["score"].to_numpy(), expected, rtol=1e-9, atol=0)).sum())
        if bad:
            problems.append(f"{bad} score(s) of v{version} differ from v{version} recomputed")
    problems += verify_lineage(streamed, outcome.readings, outcome.late_seqs)
    versions = streamed["model_version"].to_list()
    if versions[0] != first or any(b < a for a, b in itertools.pairwise(versions)):
        problems.append(f"model versions in write order go {_runs(versions)}")
    want = streamed.filter(pl.col("score") >= THRESHOLD).select(KEY).sort(KEY)
    if not want.equals(outcome.alerts.select(KEY).sort(KEY)):
        problems.append(
            f"alerts topic: {outcome.alerts.height} alerts, {want.height} scores >= {THRESHOLD}"
        )
    return problems


def verify_lineage(
    predictions: pl.DataFrame, readings: pl.DataFrame, late_seqs: set[int]
) -> list[str]:
    """Each prediction's ``_partition``/``_offset`` must name a reading of its device inside its
    window, the window's latest counted one (by time, then partition, then offset)."""
    if not {"_partition", "_offset"} <= set(predictions.columns):
        return ["the predictions carry no lineage (_partition, _offset)"]
    named = predictions.join(readings, on=["_partition", "_offset"], how="left", suffix="_rec")
    problems = []
    unknown = named["seq"].null_count()
    if unknown:
        problems.append(f"{unknown} prediction(s) name a record the readings topic lacks")
    inside = (
        (pl.col("device_rec") == pl.col("device"))
        & (pl.col("ts") >= pl.col("window_start"))
        & (pl.col("ts") < pl.col("window_end"))
    )
    outside = named.drop_nulls("seq").filter(~inside).height
    if outside:
        problems.append(f"{outside} prediction(s) name a record outside their device's window")
    counted = readings.filter(~pl.col("seq").is_in(sorted(late_seqs)) & (pl.col("seq") >= 0))
    latest = (
        counted.with_columns(window_start=pl.col("ts") - pl.col("ts") % WINDOW_MS)
        .sort("ts", "_partition", "_offset")
        .group_by("device", "window_start")
        .last()
        .select(*KEY, "_partition", "_offset")
    )
    got = predictions.select(*KEY, "_partition", "_offset").sort(KEY)
    other = got.join(latest, on=KEY, how="left", suffix="_latest").filter(
        (pl.col("_offset") != pl.col("_offset_latest"))
        | (pl.col("_partition") != pl.col("_partition_latest"))
        | pl.col("_offset_latest").is_null()
    )
    if other.height:
        problems.append(f"{other.height} prediction(s) do not name their window's latest reading")
    return problems


def _runs(versions: list[int]) -> str:
    runs: list[list[int]] = []
    for v in versions:
        if runs and runs[-1][0] == v:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    return " -> ".join(f"v{v} x{n}" for v, n in runs)


def version_runs(predictions: pl.DataFrame) -> str:
    """The model versions in write order, e.g. ``v1 x120 -> v2 x98``."""
    return _runs(predictions["model_version"].to_list())


def quality(live: pl.DataFrame, predictions: pl.DataFrame) -> dict[str, float]:
    """Precision and recall at :data:`THRESHOLD`, and ROC AUC, of the scores against each
    window's label (any anomaly among its readings)."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    labelled = predictions.join(window_labels(live), on=KEY, how="inner")
    y, score = labelled["anomaly"].to_numpy(), labelled["score"].to_numpy()
    out = {
        "windows": float(labelled.height),
        "anomalous": float(y.sum()),
        "precision": float(precision_score(y, score >= THRESHOLD, zero_division=0)),
        "recall": float(recall_score(y, score >= THRESHOLD, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan"),
    }
    return out


def latency_ms(records: LiveRecords, sent_s: np.ndarray, scored: pl.DataFrame) -> np.ndarray:
    """Per scored window: its write time minus the produce time of the first record after
    which every partition's watermark (max event time - the bound) had passed its end."""
    wm = np.full(PARTITIONS, np.iinfo(np.int64).min // 2, dtype=np.int64)
    after = np.empty(len(records.ts), dtype=np.int64)
    for i, (p, ts) in enumerate(zip(records.partition, records.ts, strict=True)):
        if ts >= 0:
            wm[p] = max(wm[p], ts - OUT_OF_ORDER_MS)
        after[i] = wm.min()
    after = np.maximum.accumulate(after)
    trigger = np.searchsorted(after, scored["window_end"].to_numpy(), side="left")
    trigger = np.minimum(trigger, len(after) - 1)
    written = scored["written_s"].to_numpy()
    latency: np.ndarray = (written - sent_s[trigger]) * 1000.0
    return latency


def join_with_devices(db: Database) -> list[tuple[object, ...]]:
    """Windows and alerts per site: the predictions joined with the devices table, in SQL."""
    return db.query(
        f"SELECT d.site, count(*), sum(CASE WHEN p.score >= {THRESHOLD} THEN 1 ELSE 0 END) "
        "FROM predictions p JOIN devices d USING (device) GROUP BY d.site ORDER BY d.site"
    )
