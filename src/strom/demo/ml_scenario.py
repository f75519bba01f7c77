"""``run_ml_demo``: the whole real-time ML loop on NASA's Shuttle sensor data (``strom demo``).

1. history → one Parquet file per device and hour; 2. the feature view backfilled over them
with the bounded engine; 3. a point-in-time training set, two models registered (v1
production, v2 staging); 4. an in-process broker, the live part through Kafka (out of order,
late, malformed), the same view streaming, scored by ``production``, predictions and online
features into SQLite (or PostgreSQL: :mod:`strom.demo.ml_db`), alerts into Kafka, v2 promoted
mid-stream; 5. quality, latency, the version switch and the checks
(:mod:`strom.demo.ml_check`). See :mod:`strom.demo.ml_data` for what is real and what is
synthetic.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from strom.demo import ml_check, ml_data, ml_loop
from strom.demo.ml_db import Database
from strom.demo.view import summary_table
from strom.ml import ModelStore


@dataclass(frozen=True)
class MLDemoConfig:
    """``rows``: the first rows of the Shuttle data (None: all 49,097); ``live_seconds``: how
    long the live part is paced over."""

    devices: int = 40
    seed: int = 7
    rows: int | None = None
    live_seconds: float = 15.0
    postgres: str | None = None  # a DSN: the tables go to PostgreSQL instead of SQLite


@dataclass
class MLDemoResult:
    problems: list[str] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_ml_demo(config: MLDemoConfig, workdir: Path, console: Console) -> MLDemoResult:
    """Run the loop with everything under ``workdir``; the result holds every mismatch."""
    from strom.broker import Broker

    started = time.perf_counter()
    result = MLDemoResult()
    for part in ("history", "models", "broker"):  # a rerun in the same directory starts afresh
        shutil.rmtree(workdir / part, ignore_errors=True)
    shuttle = ml_data.load_shuttle(config.rows)
    layout = ml_data.lay_out(shuttle, config.devices, config.seed)
    console.print(
        f"NASA Shuttle sensors (river's bundled copy): {shuttle.height} readings, "
        f"{int(shuttle['anomaly'].sum())} labelled anomalies; {config.devices} devices "
        f"(synthetic layout); history {layout.history.height}, live {layout.live.height}"
    )
    paths = ml_data.write_history(layout.history, workdir / "history")
    console.print(f"1. history written to {len(paths)} Parquet files (per device and hour)")

    devices = sorted(layout.history["device"].unique())
    with Progress(TextColumn("2. backfilling features"), BarColumn(), MofNCompleteColumn(),
                  console=console) as bar:  # fmt: skip
        task = bar.add_task("backfill", total=len(devices))
        features = ml_loop.backfill(workdir / "history", devices, lambda: bar.advance(task))
    console.print(
        f"   {features.height} windows from {len(paths)} files, view "
        f"{ml_loop.VIEW.name} v{ml_loop.VIEW.version}"
    )

    store = ModelStore(workdir / "models")
    trained = ml_loop.train(store, layout.history, features, config.seed)
    console.print(
        f"3. training set: {trained.data.height} windows ({trained.positives} anomalous), point in "
        f"time; registered {ml_loop.MODEL} v{trained.first} (logistic regression, production, "
        f"holdout ROC AUC {trained.holdout_auc[trained.first]:.3f}) and v{trained.second} "
        f"(random forest, staging, {trained.holdout_auc[trained.second]:.3f})"
    )

    (workdir / "ml.db").unlink(missing_ok=True)
    db = Database(workdir / "ml.db", config.postgres)
    db.write_devices(layout.devices)
    records = ml_data.live_records(layout.live, layout.devices, config.seed)
    with Broker(workdir / "broker") as broker:
        bootstrap = broker.bootstrap_servers
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
        topics = [NewTopic(t, ml_data.PARTITIONS, 1)
                  for t in (ml_loop.READINGS_TOPIC, ml_loop.ALERTS_TOPIC)]  # fmt: skip
        for future in admin.create_topics(topics).values():
            future.result(30)
        console.print(
            f"4. broker on {bootstrap}; streaming {len(records.values)} records "
            f"({len(records.late)} late, {records.malformed} malformed) over "
            f"~{config.live_seconds:g} s; v{trained.second} promoted halfway"
        )
        with Progress(TextColumn("   live"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.description}"), console=console) as bar:  # fmt: skip
            task = bar.add_task("", total=len(records.values))

            def progress(produced: int, scored: int) -> None:
                bar.update(task, completed=produced, description=f"{scored} windows scored")

            live = ml_loop.stream_live(
                bootstrap, store, db, records, seconds=config.live_seconds,
                promote_to=trained.second, progress=progress,
            )  # fmt: skip
        outcome = ml_check.read_outcome(db, bootstrap)

    result.problems = [
        *ml_check.verify_training(layout.history, trained.data),
        *ml_check.verify(store, layout.live, records, outcome, trained.first),
    ]
    if outcome.predictions.height == 0 or not live.scored:
        for problem in result.problems:
            console.print(f"[red]mismatch:[/] {problem}")
        return result
    quality = ml_check.quality(layout.live, outcome.predictions)
    scored = pl.concat(live.scored)
    latency = ml_check.latency_ms(records, live.sent_s, scored)
    by_site = ml_check.join_with_devices(db)
    console.print(
        f"   alerts per site (predictions JOIN devices in {db}): "
        + ", ".join(f"{s} {a}/{n}" for s, n, a in by_site)
    )
    switch = ml_check.version_runs(outcome.predictions)
    per_version = ", ".join(
        f"v{v} {ml_check.quality(layout.live, rows)['roc_auc']:.3f}"
        for (v,), rows in outcome.predictions.group_by("model_version", maintain_order=True)
    )
    result.lines = [
        ("windows scored", f"{outcome.predictions.height} in {live.seconds:.1f} s"),
        ("labelled anomalous", f"{int(quality['anomalous'])}"),
        ("precision", f"{quality['precision']:.3f}"),
        ("recall", f"{quality['recall']:.3f}"),
        ("ROC AUC", f"{quality['roc_auc']:.3f}"),
        ("ROC AUC per version", per_version),
        ("latency p50", f"{np.percentile(latency, 50):.1f} ms"),
        ("latency p99", f"{np.percentile(latency, 99):.1f} ms"),
        ("version switch", f"{switch} (promoted after {live.promoted_after} windows)"),
        ("alerts (Kafka)", str(outcome.alerts.height)),
        ("late readings", str(len(outcome.late_seqs))),
        ("dead letters", str(outcome.dead_letters)),
        ("checks", "FAILED" if result.problems else "passed"),
        ("total time", f"{time.perf_counter() - started:.1f} s"),
    ]
    console.print(summary_table(result.lines))
    if not result.problems:
        console.print(
            "checks passed: online == offline features; every score recomputed offline with "
            "the version its row names; every score's lineage names its window's latest record"
        )
    for problem in result.problems:
        console.print(f"[red]mismatch:[/] {problem}")
    return result
