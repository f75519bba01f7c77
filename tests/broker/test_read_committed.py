"""read_committed against a strom broker whose partition holds transactional batches and
markers (written into the log directly: the transactional produce path is tested elsewhere),
with confluent-kafka, kafka-python, aiokafka and kcat: committed records only, in order, past
every marker; read_uncommitted sees every record; a consumer blocked at the last stable offset
goes on when the marker lands."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from txn_fill import COMMITTED, END, HISTORY, UNCOMMITTED, fill, in_broker

from strom.broker import Broker
from strom.broker.log import LogConfig

KCAT = shutil.which("kcat")


def _confluent(broker: Broker, isolation: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"g-{uuid.uuid4().hex}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 200,
            **extra,
        }
    )


def _confluent_read(consumer: Consumer, want: int, timeout: float = 20) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None:
            assert msg.error() is None, msg.error()
            got.append(msg.value() or b"")
    return got


@pytest.mark.parametrize(
    ("isolation", "expected"),
    [("read_committed", COMMITTED), ("read_uncommitted", UNCOMMITTED)],
)
def test_confluent(strom_broker: Broker, isolation: str, expected: list[bytes]) -> None:
    assert fill(strom_broker, "t", HISTORY) == END
    consumer = _confluent(strom_broker, isolation)
    try:
        consumer.assign([TopicPartition("t", 0, 0)])
        got = _confluent_read(consumer, len(expected))
        assert got == expected
        # nothing more arrives, and the position has gone past the final commit marker
        assert _confluent_read(consumer, 1, timeout=1) == []
        [position] = consumer.position([TopicPartition("t", 0)])
        assert position.offset == END
    finally:
        consumer.close()


def test_kafka_python(strom_broker: Broker) -> None:
    fill(strom_broker, "t", HISTORY)
    for isolation, expected in (("read_committed", COMMITTED), ("read_uncommitted", UNCOMMITTED)):
        consumer = KafkaConsumer(
            bootstrap_servers=strom_broker.bootstrap_servers,
            isolation_level=isolation,
            enable_auto_commit=False,
            fetch_max_wait_ms=200,
        )
        try:
            tp = KpTopicPartition("t", 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(got) < len(expected) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    got += [r.value for r in records]
            assert got == expected, isolation
            assert consumer.end_offsets([tp])[tp] == END
            assert consumer.position(tp) == END
        finally:
            consumer.close()


def test_aiokafka(strom_broker: Broker) -> None:
    fill(strom_broker, "t", HISTORY)

    async def read(isolation: str, want: int) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=strom_broker.bootstrap_servers,
            isolation_level=isolation,
            enable_auto_commit=False,
            fetch_max_wait_ms=200,
        )
        await consumer.start()
        try:
            tp = AioTopicPartition("t", 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got: list[bytes] = []
            while len(got) < want:
                batch = await consumer.getmany(timeout_ms=200)
                got += [r.value for records in batch.values() for r in records]
            return got
        finally:
            await consumer.stop()

    committed = asyncio.run(asyncio.wait_for(read("read_committed", len(COMMITTED)), 30))
    assert committed == COMMITTED
    everything = asyncio.run(asyncio.wait_for(read("read_uncommitted", len(UNCOMMITTED)), 30))
    assert everything == UNCOMMITTED


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat)")
@pytest.mark.parametrize(
    ("isolation", "expected"),
    [("read_committed", COMMITTED), ("read_uncommitted", UNCOMMITTED)],
)
def test_kcat(strom_broker: Broker, isolation: str, expected: list[bytes]) -> None:
    assert KCAT is not None
    fill(strom_broker, "t", HISTORY)
    done = subprocess.run(
        [KCAT, "-b", strom_broker.bootstrap_servers, "-C", "-t", "t", "-o", "beginning", "-e",
         "-X", f"isolation.level={isolation}", "-f", "%s\\n"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.splitlines() == expected


def test_blocked_at_the_lso_until_the_marker(strom_broker: Broker) -> None:
    """A read_committed consumer reads up to the open transaction and waits there (the
    records after it too: they are above the LSO), then reads on once it commits."""
    fill(strom_broker, "t", [("plain", [b"before"]), ("txn", 7, [b"open"]), ("plain", [b"x"])])
    consumer = _confluent(strom_broker, "read_committed")
    try:
        consumer.assign([TopicPartition("t", 0, 0)])
        assert _confluent_read(consumer, 1) == [b"before"]
        assert _confluent_read(consumer, 1, timeout=1.5) == []  # stuck at the LSO (offset 1)
        # librdkafka's read_committed "high" offset is ListOffsets latest, i.e. the LSO
        low, high = consumer.get_watermark_offsets(TopicPartition("t", 0), cached=False)
        assert (low, high) == (0, 1)
        fill(strom_broker, "t", [("commit", 7)])
        assert _confluent_read(consumer, 2) == [b"open", b"x"]
    finally:
        consumer.close()


def test_fetch_from_inside_an_aborted_transaction(strom_broker: Broker) -> None:
    """A consumer starting in the middle of an aborted transaction skips the rest of it."""
    fill(
        strom_broker,
        "t",
        [
            ("txn", 5, [b"x0", b"x1"]),
            ("plain", [b"p"]),
            ("txn", 5, [b"x2"]),
            ("abort", 5),
            ("plain", [b"q"]),
        ],
    )
    consumer = _confluent(strom_broker, "read_committed")
    try:
        consumer.assign([TopicPartition("t", 0, 1)])  # inside the first aborted batch
        assert _confluent_read(consumer, 2) == [b"p", b"q"]
    finally:
        consumer.close()


def test_lso_after_restart(tmp_path: Any) -> None:
    """The transaction state survives a broker restart: an open transaction still holds the
    LSO, and the aborted list still hides what was aborted."""
    data = tmp_path / "data"
    with Broker(data) as broker:
        fill(broker, "t", [*HISTORY, ("txn", 9, [b"open"]), ("plain", [b"later"])])
    with Broker(data) as broker:
        lso = in_broker(broker, lambda s: s.logs.partition("t", 0).last_stable_offset)
        assert lso == END
        consumer = _confluent(broker, "read_committed")
        try:
            consumer.assign([TopicPartition("t", 0, 0)])
            assert _confluent_read(consumer, len(COMMITTED)) == COMMITTED
            fill(broker, "t", [("abort", 9)])
            assert _confluent_read(consumer, 1) == [b"later"]
        finally:
            consumer.close()


def test_aborted_transaction_spanning_segments(tmp_path: Any) -> None:
    """AutoMQ #754: the transaction starts segments before its abort marker; a consumer that
    starts in a later segment, inside the transaction, still drops its records."""
    steps: list[tuple[object, ...]] = [("txn", 4, [b"t-first"])]
    for i in range(30):
        steps.append(("plain", [b"filler-%02d" % i + b"." * 80]))
        if i % 10 == 9:
            steps.append(("txn", 4, [b"t-%d" % i]))
    steps += [("abort", 4), ("plain", [b"last"])]
    with Broker(tmp_path / "data", log=LogConfig(segment_bytes=1000)) as broker:
        fill(broker, "t", steps)
        bases = in_broker(broker, lambda s: s.logs.partition("t", 0).segment_base_offsets)
        assert len(bases) >= 3
        consumer = _confluent(broker, "read_committed")
        try:
            start = bases[-2] + 1  # two segments after the transaction's first offset
            consumer.assign([TopicPartition("t", 0, start)])
            got = _confluent_read(consumer, 100, timeout=3)
        finally:
            consumer.close()
    assert got and got[-1] == b"last"
    assert not [v for v in got if v.startswith(b"t-")]
