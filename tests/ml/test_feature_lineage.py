"""A feature view's windows name the Kafka record behind them (lineage): the window's latest
event by event time, ties to the higher partition, then the later offset."""

from __future__ import annotations

import json
import random

import polars as pl
from polars.testing import assert_frame_equal
from tests.connectors.connector_helpers import Sent, create_topic, produce

from strom import Broker, KafkaSource, MemorySink, Pipeline, Tumbling, agg, run_streaming
from strom.ml import FeatureView

SCHEMA = {"device": pl.String, "ts": pl.Int64, "temp": pl.Float64}
VIEW = FeatureView(
    "device_10s",
    keys=("device",),
    window=Tumbling(10_000),
    aggs=(agg.count(), agg.mean("temp")),
    timestamp="ts",
    input_schema=SCHEMA,
)


def test_each_window_names_its_latest_record(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "readings", 2)
    rng = random.Random(7)
    rows = []
    for _ in range(300):
        device = rng.choice("abcd")
        # "d" is spread over both partitions, and its times repeat: ties across partitions
        partition = rng.randrange(2) if device == "d" else "abc".index(device) % 2
        ts = rng.randrange(0, 40) * 1_000 if device == "d" else rng.randrange(0, 40_000)
        rows.append({"device": device, "ts": ts, "temp": rng.uniform(10, 30), "p": partition})
    sent = [Sent(r["p"], json.dumps({k: r[k] for k in SCHEMA}).encode()) for r in rows]
    placed = produce(bootstrap, "readings", sent)
    p = Pipeline()
    source = KafkaSource(bootstrap, "readings", schema=SCHEMA, bounded=True)
    stream = p.source(source, timestamp="ts", max_out_of_orderness_ms=60_000)
    VIEW.apply(stream).sink(sink := MemorySink())
    run_streaming(p)
    out = sink.to_frame().sort("device", "window_start")

    sent_frame = pl.DataFrame(rows).with_columns(
        _partition=pl.Series([part for part, _ in placed], dtype=pl.Int32),
        _offset=pl.Series([o for _, o in placed], dtype=pl.Int64),
        window_start=pl.col("ts") - pl.col("ts") % 10_000,
    )
    latest = (
        sent_frame.sort("ts", "_partition", "_offset")
        .group_by("device", "window_start")
        .last()
        .sort("device", "window_start")
    )
    assert out.select("device", "window_start", "_partition", "_offset").equals(
        latest.select("device", "window_start", "_partition", "_offset")
    )
    assert set(out["_topic"]) == {"readings"}
    offline = VIEW.compute_frame(pl.DataFrame(rows).select(*SCHEMA).cast(SCHEMA))  # type: ignore[arg-type]
    assert "_offset" not in offline.columns  # files and frames carry no lineage
    assert_frame_equal(  # the features themselves: lineage changes none
        out.select(offline.columns),
        offline.sort("device", "window_start"),
        check_exact=False,
        rel_tol=1e-12,
    )


def test_lineage_columns_are_not_training_features() -> None:
    from strom.ml import training_set

    features = pl.DataFrame(
        {"device": ["a"], "window_start": [0], "window_end": [10_000], "count": [3],
         "mean_temp": [20.0], "_topic": ["readings"], "_partition": [0], "_offset": [7]},
        schema_overrides={"_partition": pl.Int32},
    )  # fmt: skip
    labels = pl.DataFrame(
        {"device": ["a"], "label_time": [15_000], "_offset": [99], "_topic": ["labels"]}
    )
    data = training_set(labels, features, keys="device", label_time="label_time", ttl=60_000)
    assert data["count"].to_list() == [3] and data["_offset"].to_list() == [99]  # the label's
    assert "_partition" not in data.columns
