"""Writing generated events: Parquet and NDJSON files, and JSON records in strom topics."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks.nexmark.generator import Events

__all__ = ["TOPICS", "produce_topics", "read_files", "write_files"]

TOPICS = {"person": "nexmark-person", "auction": "nexmark-auction", "bid": "nexmark-bid"}


def write_files(
    events: Events, directory: Path, formats: tuple[str, ...] = ("parquet", "ndjson")
) -> None:
    """``directory/person.parquet``, ``person.ndjson``, … (one file per kind and format)."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind, frame in events.frames().items():
        if "parquet" in formats:
            frame.write_parquet(directory / f"{kind}.parquet")
        if "ndjson" in formats:
            frame.write_ndjson(directory / f"{kind}.ndjson")


def read_files(directory: Path) -> Events:
    """The events :func:`write_files` wrote as Parquet."""
    frames = {k: pl.read_parquet(directory / f"{k}.parquet") for k in TOPICS}
    return Events(person=frames["person"], auction=frames["auction"], bid=frames["bid"])


def create_topics(bootstrap: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(t, partitions, 1) for t in TOPICS.values()]
    for future in admin.create_topics(topics).values():
        future.result(30)


def produce_topics(events: Events, bootstrap: str, partitions: int) -> float:
    """Create the three topics and produce every event as one JSON value; returns seconds.

    Event ``i`` of a kind goes to partition ``i % partitions``, so every partition holds the
    same stretch of event time, in order (the idempotent producer keeps per-partition order).
    """
    started = time.perf_counter()
    create_topics(bootstrap, partitions)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 50,
            "batch.size": 1 << 20,  # a broker's default limit on one record batch
            "batch.num.messages": 100_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1 << 21,
        }
    )
    for kind, topic in TOPICS.items():
        frame = events.frames()[kind]
        step = 200_000
        for begin in range(0, frame.height, step):
            lines = frame.slice(begin, step).write_ndjson().encode().split(b"\n")
            produce = producer.produce
            for i, value in enumerate(lines[:-1], start=begin):
                while True:
                    try:
                        produce(topic, value, partition=i % partitions)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} Nexmark events were not acknowledged by the broker")
    stored = stored_counts(bootstrap, partitions)
    for kind, topic in TOPICS.items():
        if stored[topic] != events.frames()[kind].height:
            raise RuntimeError(
                f"{topic} holds {stored[topic]} records, not {events.frames()[kind].height}"
            )
    return time.perf_counter() - started


def stored_counts(bootstrap: str, partitions: int) -> dict[str, int]:
    """Records per Nexmark topic, from the partitions' offsets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "nexmark-check"})
    try:
        return {
            topic: sum(
                high - low
                for low, high in (
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                    for p in range(partitions)
                )
            )
            for topic in TOPICS.values()
        }
    finally:
        consumer.close()
