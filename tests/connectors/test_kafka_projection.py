"""A Kafka source builds only the metadata columns its plan reads
(:func:`strom.engine.projection.read_columns`), and every step still gets what it reads."""

from __future__ import annotations

import json

import polars as pl
from connector_helpers import Sent, create_topic, produce

from strom import KafkaSource, MemorySink, Pipeline
from strom.broker import Broker
from strom.runtime import run_streaming


def test_a_kafka_source_builds_only_the_metadata_a_plan_reads(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "proj", 2)
    sent = [Sent(i % 2, json.dumps({"n": i}).encode(), timestamp=5_000 + i) for i in range(40)]
    produce(bootstrap, "proj", sent)

    def run(build: object) -> pl.DataFrame:
        source = KafkaSource(bootstrap, "proj", schema={"n": pl.Int64}, bounded=True)
        p = Pipeline()
        assert callable(build)
        build(p.source(source)).sink(out := MemorySink())
        run_streaming(p)
        return out.to_frame().sort("n")

    # reads nothing of the metadata: the source builds none of it, the result is the same
    plain = run(lambda s: s.filter(pl.col("n") % 3 != 0).select("n"))
    assert plain["n"].to_list() == [i for i in range(40) if i % 3]
    # reads _offset and _timestamp in a filter and a new column: they are there and right
    both = run(
        lambda s: (
            s.filter(pl.col("_offset") < 10)
            .with_columns(age=pl.col("_timestamp") - 5_000)
            .select("n", "age", "_partition")
        )
    )
    assert both.rows() == [(i, i, i % 2) for i in range(20)]
    # a sink straight after the source: every column, as before
    whole = run(lambda s: s)
    assert whole.columns == ["n", "_key", "_topic", "_partition", "_offset", "_timestamp"]
    assert whole["_topic"].unique().to_list() == ["proj"]
