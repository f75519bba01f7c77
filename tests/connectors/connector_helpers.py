"""Helpers for the connector tests: topics, producing and consuming with confluent-kafka."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Sent:
    """A record to produce to an explicit partition (timestamp in ms, or the producer's)."""

    partition: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True)
class Got:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(15)


def produce(bootstrap: str, topic: str, records: Sequence[Sent]) -> list[tuple[int, int]]:
    """Produce ``records`` in order; returns each one's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    placed: dict[int, tuple[int, int]] = {}

    def delivered(index: int) -> object:
        def callback(error: KafkaError | None, message: object) -> None:
            assert error is None, error
            placed[index] = (message.partition(), message.offset())  # type: ignore[attr-defined]

        return callback

    for i, r in enumerate(records):
        extra: dict[str, object] = {}
        if r.timestamp is not None:
            extra["timestamp"] = r.timestamp
        if r.headers is not None:
            extra["headers"] = r.headers
        producer.produce(
            topic,
            value=r.value,
            key=r.key,
            partition=r.partition,
            on_delivery=delivered(i),
            **extra,
        )
    assert producer.flush(15) == 0
    return [placed[i] for i in range(len(records))]


def consume_all(bootstrap: str, topic: str, partitions: int) -> list[Got]:
    """Every record of ``topic`` (read up to the end of each partition), by partition, offset."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[Got] = []
    at_end: set[int] = set()
    try:
        while len(at_end) < partitions:
            for m in consumer.consume(500, timeout=0.1):
                error = m.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    at_end.add(m.partition() or 0)
                    continue
                at_end.discard(m.partition() or 0)
                out.append(
                    Got(m.partition() or 0, m.offset() or 0, m.key(), m.value(), m.timestamp()[1])
                )
    finally:
        consumer.close()
    return sorted(out, key=lambda g: (g.partition, g.offset))
