"""Per-device sensor statistics over 10-second windows, from Kafka into SQLite.

Reads JSON readings ``{"ts": <epoch ms>, "device": "...", "temp": <float>, "vibration": <float>}``
from the Kafka topic ``sensors``; for every device and 10 s tumbling window (by the readings'
own ``ts``) it computes the number of readings, the mean temperature and the largest vibration,
and upserts them into the table ``sensor_windows`` keyed by ``(device, window_start)``: a
window's late update replaces its earlier row. Undecodable readings land in ``dead_letters``
and readings later than the allowed lateness in ``late_readings`` — nothing is dropped.

Run it (any Kafka cluster works; ``strom broker`` is one)::

    strom broker &
    strom topics create --topic sensors --partitions 3
    echo '{"ts": 1000, "device": "d1", "temp": 21.5, "vibration": 0.2}' | strom produce sensors
    strom run examples/sensor_windows.py          # Ctrl-C to stop
    sqlite3 sensors.db 'select * from sensor_windows'

Environment: ``STROM_BOOTSTRAP`` (default ``localhost:9092``), ``STROM_SQLITE`` (default
``./sensors.db``), ``STROM_TOPIC`` (default ``sensors``), ``STROM_BOUNDED=1`` to read what the
topic holds now and stop, with every window emitted.
"""

import os

import polars as pl

from strom import KafkaSource, Pipeline, SQLiteSink, Tumbling, agg

BOOTSTRAP = os.environ.get("STROM_BOOTSTRAP", "localhost:9092")
DATABASE = os.environ.get("STROM_SQLITE", "sensors.db")
TOPIC = os.environ.get("STROM_TOPIC", "sensors")
BOUNDED = os.environ.get("STROM_BOUNDED") == "1"

READING = pl.Schema(
    {"ts": pl.Int64(), "device": pl.String(), "temp": pl.Float64(), "vibration": pl.Float64()}
)

pipeline = Pipeline()
readings = pipeline.source(
    KafkaSource(
        BOOTSTRAP,
        TOPIC,
        schema=READING,
        bounded=BOUNDED,
        dead_letter=SQLiteSink(DATABASE, "dead_letters"),
    ),
    timestamp="ts",
    max_out_of_orderness_ms=2_000,
    # a partition without readings for 30 s stops holding the watermark back (streaming only:
    # a bounded run ends each partition instead, so results do not depend on timing)
    idle_timeout_ms=None if BOUNDED else 30_000,
)
windows = (
    readings.select("ts", "device", "temp", "vibration")
    .key_by("device")
    .window(Tumbling(10_000), allowed_lateness_ms=5_000)
    .agg(agg.count(), agg.mean("temp"), agg.max("vibration"))
)
windows.sink(SQLiteSink(DATABASE, "sensor_windows", key=["device", "window_start"], mode="upsert"))
windows.late().sink(SQLiteSink(DATABASE, "late_readings"))
