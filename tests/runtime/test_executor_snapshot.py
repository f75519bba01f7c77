"""A whole executor's snapshot: run a windowed pipeline halfway, snapshot it to bytes, build a fresh
executor from the same pipeline definition, restore, finish. What the first executor emitted and
what the second one emits are together exactly one uninterrupted run's output (the sinks are
fresh, so at-least-once re-emits nothing here)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from polars.testing import assert_frame_equal

from strom.broker import Broker
from strom.connectors import FileSource, KafkaSource, MemorySink
from strom.engine.contracts import Source
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import ExecutorSnapshot, StreamingExecutor

SCHEMA = pl.Schema({"ts": pl.Int64(), "device": pl.String(), "temp": pl.Float64()})
Build = Callable[[], tuple[Pipeline, list[MemorySink]]]


def _events(n: int, seed: int, disorder: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {"ts": i * 97 - rng.randrange(disorder), "device": f"d{rng.randrange(6)}",
         "temp": rng.randrange(400) / 8}
        for i in range(n)
    ]  # fmt: skip


def _pipeline(source: Source) -> tuple[Pipeline, list[MemorySink]]:
    p = Pipeline()
    events = p.source(source, timestamp="ts", max_out_of_orderness_ms=1_000)
    windows = events.key_by("device").window(Tumbling(2_000), allowed_lateness_ms=500)
    result = windows.agg(agg.count(), agg.mean("temp"), agg.max("temp"), agg.count_distinct("temp"))
    result.sink(results := MemorySink())
    result.late().sink(late := MemorySink())
    return p, [results, late]


def _resumed(build: Build, until: Callable[[StreamingExecutor], bool]) -> list[pl.DataFrame]:
    """Run ``build()`` until ``until``, snapshot; run a fresh ``build()`` from the snapshot."""
    p, before = build()
    first = StreamingExecutor(p)
    while not until(first):
        assert first.step(), "the run ended before the snapshot"
    assert sum(op.state_size() for op in first.stateful_operators().values())
    blob = first.snapshot().to_bytes()
    first.close()
    q, after = build()
    second = StreamingExecutor(q)
    second.restore(ExecutorSnapshot.from_bytes(blob))
    second.run()
    assert after[0].batches
    return [_frame(b.batches + a.batches) for b, a in zip(before, after, strict=True)]


def _frame(batches: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(batches) if batches else pl.DataFrame()


def _whole(build: Build) -> list[pl.DataFrame]:
    p, sinks = build()
    StreamingExecutor(p).run()
    return [_frame(s.batches) for s in sinks]


def test_file_sourced_windows_resume_from_a_snapshot(tmp_path: Path) -> None:
    events = pl.DataFrame(_events(3_000, seed=1, disorder=8_000), schema=SCHEMA)
    for i in range(120):  # each partition reads every third file: one file, one batch
        events[i * 25 : (i + 1) * 25].write_parquet(tmp_path / f"events-{i:03d}.parquet")

    def build() -> tuple[Pipeline, list[MemorySink]]:
        return _pipeline(FileSource(str(tmp_path / "*.parquet"), "parquet", partitions=3))

    rounds = [0]

    def halfway(ex: StreamingExecutor) -> bool:
        rounds[0] += 1
        return rounds[0] > 20  # 20 of each partition's 40 files read

    expected = _whole(build)
    assert expected[1].height and expected[0]["is_update"].any()  # late rows and updates too
    for got, want in zip(_resumed(build, halfway), expected, strict=True):
        assert_frame_equal(got, want)


@pytest.mark.parametrize("client", ["strom", "librdkafka"])
def test_kafka_sourced_windows_resume_from_a_snapshot(strom_broker: Broker, client: str) -> None:
    bootstrap = strom_broker.bootstrap_servers
    topic = f"readings-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        future.result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, event in enumerate(_events(1_500, seed=2, disorder=1_000)):
        producer.produce(topic, json.dumps(event).encode(), partition=i % 3)
    assert producer.flush(15) == 0

    def build() -> tuple[Pipeline, list[MemorySink]]:
        source = KafkaSource(bootstrap, topic, schema=SCHEMA, bounded=True, client=client,  # type: ignore[arg-type]
                             max_batch_records=100, poll_timeout_ms=20)  # fmt: skip
        return _pipeline(source)

    def halfway(ex: StreamingExecutor) -> bool:
        return ex.metrics()["source0"].rows_out >= 750

    # Kafka decides how records fall into batches, and so when the watermark moves: with disorder
    # within max_out_of_orderness no row is late and each window is emitted once, complete, but
    # the interleaving of results across windows depends on the batches
    expected = _whole(build)
    for got, want in zip(_resumed(build, halfway), expected, strict=True):
        if want.height:
            assert_frame_equal(got.sort(pl.all()), want.sort(pl.all()))
        else:
            assert got.height == 0


def test_a_snapshot_before_the_first_step_is_the_start(tmp_path: Path) -> None:
    events = pl.DataFrame(_events(500, seed=3, disorder=3_000), schema=SCHEMA)
    events.write_parquet(tmp_path / "e.parquet")

    def build() -> tuple[Pipeline, list[MemorySink]]:
        return _pipeline(FileSource(str(tmp_path / "*.parquet"), "parquet"))

    p, _ = build()
    start = StreamingExecutor(p).snapshot()
    assert start.positions == {"source0": [{"file": 0, "after": None}]}
    q, sinks = build()
    again = StreamingExecutor(q)
    again.restore(ExecutorSnapshot.from_bytes(start.to_bytes()))
    again.run()
    for got, want in zip((_frame(s.batches) for s in sinks), _whole(build), strict=True):
        assert_frame_equal(got, want)
