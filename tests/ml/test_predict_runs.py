"""``Stream.predict`` in real runs: lineage from a Kafka topic, checkpointed runs, workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
from tests.connectors.connector_helpers import Sent, create_topic, produce
from tests.ml.ml_helpers import training_frame

from strom import Broker, KafkaSource, MemorySink, MemorySource, Pipeline, run_streaming
from strom.ml import ModelStore
from strom.runtime import StreamingExecutor
from strom.runtime.checkpoints import CheckpointStore
from strom.runtime.distributed.plan_split import WorkerConfig, split_plan

SCHEMA = {"id": pl.Int64, "amount": pl.Float64, "count": pl.Int64}


def test_each_prediction_names_the_kafka_record_behind_it(
    strom_broker: Broker, fraud_store: ModelStore
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "payments", 3)
    X, _ = training_frame(90, seed=3)
    rows = X.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("id")).to_dicts()
    sent = [Sent(r["id"] % 3, json.dumps(r).encode()) for r in rows]
    sent.append(Sent(0, b"{not json"))  # a malformed record: the source's dead letter
    placed = produce(bootstrap, "payments", sent)
    sink, dead = MemorySink(), MemorySink()
    p = Pipeline()
    source = KafkaSource(bootstrap, "payments", schema=SCHEMA, bounded=True, dead_letter=dead)
    p.source(source, timestamp="_timestamp").predict(fraud_store, "fraud").sink(sink)
    run_streaming(p)
    out = sink.to_frame().sort("id")
    assert out.height == 90 and dead.to_frame().height == 1
    expected = [("payments", *placed[i]) for i in out["id"]]
    assert list(zip(out["_topic"], out["_partition"], out["_offset"], strict=True)) == expected
    model = fraud_store.load("fraud", 1).model
    np.testing.assert_allclose(
        out["score"], model.predict_proba(out.select("amount", "count"))[:, 1]
    )


def test_a_checkpointed_run_records_and_restores_the_version(
    fraud_store: ModelStore, tmp_path: Path
) -> None:
    X, _ = training_frame(200, seed=4)
    events = X.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("id"))
    batches = [events.slice(s, 20) for s in range(0, 200, 20)]

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        p.source(MemorySource([batches])).predict(
            fraud_store, "fraud", dead_letter=MemorySink()
        ).sink(sink)
        return p

    first = MemorySink()
    run_streaming(build(first), checkpoint_dir=tmp_path / "chk", checkpoint_interval=0,
                  guarantee="at-least-once")  # fmt: skip
    assert set(first.to_frame()["model_version"]) == {1}
    store = CheckpointStore(tmp_path / "chk")
    manifest = store.latest()
    assert manifest is not None
    assert manifest.fingerprint["definitions"]["1:Predict"] == {
        "model": "fraud", "ref": "production", "output": "score"
    }  # fmt: skip
    assert store.load(manifest).states["1:Predict"].meta["version"] == 1


def test_workers_score_their_share_with_the_same_model(fraud_store: ModelStore) -> None:
    X, _ = training_frame(240, seed=6)
    events = X.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("id"))
    parts = [[events.slice(s, 20) for s in range(p * 20, 240, 80)] for p in range(4)]
    outputs = []
    for index in range(2):
        sink = MemorySink()
        p = Pipeline()
        p.source(MemorySource(parts)).predict(fraud_store, "fraud").sink(sink)
        config = WorkerConfig(index, 2, "app", "run", None)
        plan, writers = split_plan(p.plan(), config, lambda: time.monotonic() * 1000)
        assert writers == []  # scoring is per row: no repartition topic
        StreamingExecutor(plan).run()
        outputs.append(sink.to_frame())
    ids = [set(o["id"]) for o in outputs]
    assert ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == set(range(240))
    both = pl.concat(outputs).sort("id")
    model = fraud_store.load("fraud", 1).model
    np.testing.assert_allclose(
        both["score"], model.predict_proba(both.select("amount", "count"))[:, 1]
    )
