"""The demo scenario: produce sensor readings to Kafka, run the pipeline, collect the outcome.

Pipeline: ``sensor-readings`` (3 partitions, JSON) → per-device 10 s tumbling windows (count,
mean and max temperature, max vibration; 2 s out-of-order bound, 5 s allowed lateness) →
lookup join with the SQLite device table → upsert into ``device_windows`` keyed by
``(device, window_start)``; windows over their device's limit or with a vibration spike →
Kafka topic ``alerts``; late readings → ``late_readings``; undecodable ones → ``dead_letters``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from strom import (
    KafkaSink,
    KafkaSource,
    Pipeline,
    SQLiteSink,
    SQLiteTable,
    StreamingExecutor,
    Tumbling,
    agg,
)
from strom.demo.check import Outcome, read_table
from strom.demo.generator import (
    ALLOWED_LATENESS_MS,
    OUT_OF_ORDER_MS,
    VIBRATION_SPIKE,
    WINDOW_MS,
    Generated,
)
from strom.engine.contracts import Sink

READINGS_TOPIC = "sensor-readings"
ALERTS_TOPIC = "alerts"
PARTITIONS = 3
MAX_BATCH = 20
READING = pl.Schema(
    {
        "seq": pl.Int64(),
        "ts": pl.Int64(),
        "device": pl.String(),
        "temp": pl.Float64(),
        "vibration": pl.Float64(),
    }
)
ALERT = pl.Schema(
    {
        "device": pl.String(),
        "window_start": pl.Int64(),
        "site": pl.String(),
        "reason": pl.String(),
        "max_temp": pl.Float64(),
        "temp_limit": pl.Float64(),
        "max_vibration": pl.Float64(),
    }
)


def create_topics(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(READINGS_TOPIC, PARTITIONS, 1), NewTopic(ALERTS_TOPIC, PARTITIONS, 1)]
    for future in admin.create_topics(topics).values():
        future.result(30)


def produce(bootstrap: str, generated: Generated) -> None:
    """Produce every record (keyed by device, so one device's readings stay in order)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    for key, value in generated.records:
        while True:
            try:
                producer.produce(READINGS_TOPIC, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(30) or failures:
        raise RuntimeError(f"producing the readings failed: {failures[:3]}")


def write_devices(db: Path, devices: pl.DataFrame) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS devices "
            "(device TEXT PRIMARY KEY, site TEXT, model TEXT, temp_limit REAL)"
        )
        conn.executemany("INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?)", devices.rows())


def build(
    bootstrap: str, db: Path, *, bounded: bool, windows_view: Sink, alerts_view: Sink
) -> tuple[Pipeline, KafkaSource]:
    """The demo pipeline (and its Kafka source, whose metrics count dead letters)."""
    source = KafkaSource(
        bootstrap,
        READINGS_TOPIC,
        schema=READING,
        bounded=bounded,
        dead_letter=SQLiteSink(db, "dead_letters"),
        # small batches: the watermark advances in steps of a few seconds of event time, so
        # readings generated LATE_DELAY_MS behind really arrive behind it (a whole partition
        # in one batch would be judged against the watermark from before it: nothing late)
        max_batch_records=MAX_BATCH,
    )
    p = Pipeline()
    readings = p.source(
        source, timestamp="ts", max_out_of_orderness_ms=OUT_OF_ORDER_MS, name="readings"
    )
    windows = (
        readings.select(*READING)
        .key_by("device")
        .window(Tumbling(WINDOW_MS), allowed_lateness_ms=ALLOWED_LATENESS_MS)
        .agg(agg.count(), agg.mean("temp"), agg.max("temp"), agg.max("vibration"))
    )
    enriched = windows.lookup_join(
        SQLiteTable(db, "devices", key="device"),
        on="device",
        columns=["site", "model", "temp_limit"],
    )
    enriched.sink(SQLiteSink(db, "device_windows", key=["device", "window_start"], mode="upsert"))
    enriched.sink(windows_view)
    hot = pl.col("max_temp") > pl.col("temp_limit")
    shaking = pl.col("max_vibration") > VIBRATION_SPIKE
    alerts = enriched.filter(hot | shaking).select(
        "device",
        "window_start",
        "site",
        pl.when(hot & shaking)
        .then(pl.lit("temperature+vibration"))
        .when(hot)
        .then(pl.lit("temperature"))
        .otherwise(pl.lit("vibration"))
        .alias("reason"),
        "max_temp",
        "temp_limit",
        "max_vibration",
    )
    alerts.sink(KafkaSink(bootstrap, ALERTS_TOPIC, key="device"))
    alerts.sink(alerts_view)
    windows.late().sink(SQLiteSink(db, "late_readings"))
    return p, source


@dataclass
class RunStats:
    executor: StreamingExecutor
    source: KafkaSource


def run(
    bootstrap: str,
    db: Path,
    *,
    bounded: bool,
    windows_view: Sink,
    alerts_view: Sink,
    tick: Callable[[], bool],
) -> RunStats:
    """Run the pipeline until its (bounded) source ends or ``tick()`` returns False."""
    pipeline, source = build(
        bootstrap, db, bounded=bounded, windows_view=windows_view, alerts_view=alerts_view
    )
    executor = StreamingExecutor(pipeline)
    try:
        while executor.step() and tick():
            pass
    finally:
        executor.close()
    return RunStats(executor, source)


def read_alerts(bootstrap: str) -> pl.DataFrame:
    """Every record of the ``alerts`` topic, read back with a bounded KafkaSource."""
    with KafkaSource(bootstrap, ALERTS_TOPIC, schema=ALERT, bounded=True) as source:
        frames = [source.scan_partition(i).collect() for i in range(source.partition_count())]
    return pl.concat(frames).select(*ALERT)


def outcome(db: Path, bootstrap: str) -> Outcome:
    """What the run left behind, read back from SQLite and Kafka."""
    windows = read_table(db, "device_windows")
    late = read_table(db, "late_readings")
    dead = read_table(db, "dead_letters")
    return Outcome(
        windows=windows if windows is not None else pl.DataFrame(),
        late=late if late is not None else pl.DataFrame({"seq": []}, schema={"seq": pl.Int64}),
        dead_letters=0 if dead is None else dead.height,
        alerts=read_alerts(bootstrap),
    )
