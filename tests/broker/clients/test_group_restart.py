"""A group consumer stays connected across a broker restart and carries on as with Kafka.

The broker persists group metadata, so after the restart the group is Stable with the same
generation, members and assignments: the consumer's next commit (old generation) succeeds, it
never rejoins, and the whole run processes every message exactly once. Each client library
(kafka-python, confluent-kafka) runs the same scenario through a small adapter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import pytest
from client_helpers import (
    Got,
    Msg,
    RestartableBroker,
    Sent,
    assert_same_log,
    by_partition,
    make_messages,
)
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

from strom.broker.coordinator import GroupDescription

PARTITIONS = 3
BATCH = 30


class Client(Protocol):
    """One producer and one group consumer of a client library."""

    sent: Sent

    def produce(self, msgs: Sequence[Msg]) -> None: ...
    def poll(self) -> list[Got]: ...
    def commit(self) -> None: ...  # synchronous; raises if the commit fails
    def committed(self) -> dict[int, int]: ...
    def close(self) -> None: ...


class KafkaPythonClient:
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
        admin.close()
        self.topic = topic
        self.sent = Sent()
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )

    def produce(self, msgs: Sequence[Msg]) -> None:
        futures = [
            self.producer.send(self.topic, key=m.key, value=m.value, headers=list(m.headers))
            for m in msgs
        ]
        for m, f in zip(msgs, futures, strict=True):
            meta = f.get(timeout=30)
            self.sent.add(meta.partition, meta.offset, m)

    def poll(self) -> list[Got]:
        return [
            Got(r.partition, r.offset, Msg(r.key, r.value, tuple(r.headers)))
            for records in self.consumer.poll(timeout_ms=500).values()
            for r in records
        ]

    def commit(self) -> None:
        self.consumer.commit()

    def committed(self) -> dict[int, int]:
        return {
            p: self.consumer.committed(KTopicPartition(self.topic, p)) or -1
            for p in range(PARTITIONS)
        }

    def close(self) -> None:
        self.consumer.close(autocommit=False)
        self.producer.close(timeout=10)


class ConfluentClient:
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
        self.topic = topic
        self.sent = Sent()
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
            }
        )
        self.consumer.subscribe([topic])

    def produce(self, msgs: Sequence[Msg]) -> None:
        errors: list[KafkaError] = []
        for m in msgs:

            def report(err: KafkaError | None, record: Any, m: Msg = m) -> None:
                if err is not None:
                    errors.append(err)
                else:
                    self.sent.add(record.partition(), record.offset(), m)

            self.producer.produce(
                self.topic, key=m.key, value=m.value, headers=list(m.headers), on_delivery=report
            )
        assert self.producer.flush(30) == 0 and errors == []

    def poll(self) -> list[Got]:
        got = []
        for r in self.consumer.consume(num_messages=100, timeout=0.5):
            if r.error() is not None:
                raise KafkaException(r.error())
            headers = tuple((k, v) for k, v in r.headers() or [])
            got.append(Got(r.partition(), r.offset(), Msg(r.key(), r.value(), headers)))
        return got

    def commit(self) -> None:
        self.consumer.commit(asynchronous=False)

    def committed(self) -> dict[int, int]:
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in self.consumer.committed(tps, timeout=10)}

    def close(self) -> None:
        self.consumer.close()


def describe(broker: RestartableBroker, group: str) -> GroupDescription:
    """The group as the broker sees it, read on the broker's own event loop."""
    runtime, loop = broker.broker._runtime, broker.broker._loop
    assert runtime is not None and runtime.state is not None and loop is not None
    coordinator = runtime.state.groups

    async def read() -> GroupDescription:
        return coordinator.describe_group(group)

    return asyncio.run_coroutine_threadsafe(read(), loop).result(10)


def process_until(client: Client, processed: list[Got], count: int, what: str) -> None:
    """Poll, process (append), commit synchronously after each poll, until ``count``."""
    deadline = time.monotonic() + 30
    while len(processed) < count:
        assert time.monotonic() < deadline, f"{what}: processed {len(processed)} of {count}"
        got = client.poll()
        if got:
            processed.extend(got)
            client.commit()  # raises CommitFailedError / KafkaException if refused


@pytest.fixture(params=["kafka-python", "confluent-kafka"])
def client(
    request: pytest.FixtureRequest, broker: RestartableBroker, topic: str
) -> Iterator[Client]:
    kind = KafkaPythonClient if request.param == "kafka-python" else ConfluentClient
    c: Client = kind(broker.bootstrap_servers, topic, f"{topic}-group")
    try:
        yield c
    finally:
        c.close()


def test_consumer_rides_through_a_restart_exactly_once(
    broker: RestartableBroker, topic: str, client: Client
) -> None:
    group = f"{topic}-group"
    processed: list[Got] = []
    client.produce(make_messages("a", BATCH, null_headers=False))
    process_until(client, processed, BATCH, "before the restart")
    before = describe(broker, group)
    assert before.state == "Stable" and len(before.members) == 1

    broker.restart()

    # Reloaded as it was: same generation, member id and assignment.
    assert describe(broker, group) == before
    client.produce(make_messages("b", BATCH, start=BATCH, null_headers=False))
    process_until(client, processed, 2 * BATCH, "after the restart")
    # Nothing more arrives: nothing was read twice.
    for _ in range(3):
        processed.extend(client.poll())
    assert_same_log(processed, client.sent)
    assert describe(broker, group) == before  # the consumer never had to rejoin
    ends = {p: max(g.offset for g in gs) + 1 for p, gs in by_partition(client.sent.placed).items()}
    assert client.committed() == ends
