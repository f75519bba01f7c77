"""kafka-python against strom: admin, every codec, groups across a restart, offsets, limits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import kafka.errors as kerr
import pytest
from client_helpers import (
    CODECS,
    Got,
    Msg,
    RestartableBroker,
    Sent,
    assert_in_send_order,
    assert_same_log,
    by_partition,
    make_messages,
    stored_batches,
    wait_until,
)
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from strom.broker import Broker

GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def messages(tag: str, count: int, start: int = 0) -> list[Msg]:
    """The shared test messages minus null header values, which kafka-python cannot send."""
    return make_messages(tag, count, start=start, null_headers=False)


@contextmanager
def admin(bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        yield client
    finally:
        client.close()


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    with admin(bootstrap) as a:
        a.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}})


def produce(
    bootstrap: str, topic: str, msgs: Sequence[Msg], sent: Sent | None = None, **config: Any
) -> Sent:
    """Send ``msgs`` in order with one producer; record where each landed."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **{"linger_ms": 5, **config})
    try:
        return send_all(producer, topic, msgs, sent)
    finally:
        producer.close(timeout=10)


def send_all(
    producer: KafkaProducer, topic: str, msgs: Sequence[Msg], sent: Sent | None = None
) -> Sent:
    sent = sent if sent is not None else Sent()
    futures = [
        producer.send(topic, key=m.key, value=m.value, headers=list(m.headers)) for m in msgs
    ]
    producer.flush(timeout=30)
    for m, f in zip(msgs, futures, strict=True):
        meta = f.get(timeout=30)
        sent.add(meta.partition, meta.offset, m)
    return sent


def to_got(record: Any) -> Got:
    headers = tuple((k, v) for k, v in record.headers)
    return Got(record.partition, record.offset, Msg(record.key, record.value, headers))


def read(consumer: KafkaConsumer, count: int, timeout: float = 30.0) -> list[Got]:
    """Poll until ``count`` records have arrived (more would show up as a mismatch)."""
    got: list[Got] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"read {len(got)} of {count} records: {got[-3:]}"
        for records in consumer.poll(timeout_ms=1000).values():
            got.extend(to_got(r) for r in records)
    return got


# -- admin -------------------------------------------------------------------------------------


def test_admin_creates_and_describes_topics(broker: RestartableBroker, topic: str) -> None:
    with admin(broker.bootstrap_servers) as a:
        created = a.create_topics(
            {
                topic: {
                    "num_partitions": 3,
                    "replication_factor": 1,
                    "configs": {"retention.ms": "60000"},
                }
            }
        )
        assert topic in a.list_topics()
        [described] = a.describe_topics([topic])
        assert described["error_code"] == 0
        assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2]
        with pytest.raises(kerr.TopicAlreadyExistsError):
            a.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
        with pytest.raises(kerr.InvalidReplicationFactorError):
            a.create_topics({topic + "-rf3": {"num_partitions": 1, "replication_factor": 3}})
        configs = a.describe_configs([ConfigResource("TOPIC", topic)])
        # The default filter keeps only overridden settings: exactly the one given.
        assert {k: v["value"] for k, v in configs["topic"][topic].items()} == {
            "retention.ms": "60000"
        }
        a.create_partitions({topic: 5})
        # By topic id (Metadata v12): the id CreateTopics returned names the same topic.
        [described] = a.describe_topics([uuid.UUID(created["topics"][0]["topic_id"])])
        assert described["name"] == topic
        assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2, 3, 4]
        a.delete_topics([topic])
        assert topic not in a.list_topics()


# -- produce / consume -------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_codec(broker: RestartableBroker, topic: str, codec: str) -> None:
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 3)
    msgs = messages(codec, 60)
    # One batch per partition (flush sends at once): clients skip compressing tiny batches.
    compression = None if codec == "none" else codec
    sent = produce(bootstrap, topic, msgs, compression_type=compression, linger_ms=1000)
    assert_in_send_order(sent, msgs)

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        got = read(consumer, len(msgs))
    finally:
        consumer.close()
    assert_same_log(got, sent)
    assert len(by_partition(got)) == 3, "7 distinct keys should reach all 3 partitions"
    # The client really compressed: the broker stored its batches as sent.
    assert {b.codec for b in stored_batches(broker.data_dir, topic)} == {codec}


def test_group_commit_survives_restart(broker: RestartableBroker, topic: str) -> None:
    """Commit part of what was read, restart, produce more: the group resumes exactly at the
    committed offsets (the uncommitted tail is read again, nothing else is)."""
    bootstrap = broker.bootstrap_servers
    group = f"{topic}-group"
    create_topic(bootstrap, topic, 3)
    first = produce(bootstrap, topic, messages("a", 40), compression_type="gzip")

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_TIMEOUTS,
    )
    got = read(consumer, 40)
    assert_same_log(got, first)
    # Commit, per partition, the offset after the first half of what was read there.
    commit_at = {p: len(rs) // 2 for p, rs in by_partition(got).items()}
    consumer.commit(
        {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in commit_at.items()}
    )
    consumer.close(autocommit=False)

    broker.restart()

    second = produce(bootstrap, topic, messages("b", 30, start=40), compression_type="lz4")
    expected = Sent([g for g in first.placed if g.offset >= commit_at[g.partition]])
    expected.placed.extend(second.placed)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_TIMEOUTS,
    )
    try:
        for p, o in commit_at.items():
            assert consumer.committed(TopicPartition(topic, p)) == o
        resumed = read(consumer, len(expected.placed))
        assert_same_log(resumed, expected)
        consumer.commit()
        ends = {p: max(g.offset for g in gs) + 1 for p, gs in by_partition(expected.placed).items()}
        for p, end in ends.items():
            assert consumer.committed(TopicPartition(topic, p)) == end
    finally:
        consumer.close(autocommit=False)


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks(broker: RestartableBroker, topic: str, acks: int | str) -> None:
    """With acks=0 the broker must not answer (the client would see a stray response); the
    records are still all there, in order."""
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 1)
    msgs = messages(f"acks{acks}", 50)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks=acks, enable_idempotence=acks == "all", linger_ms=5
    )
    try:
        futures = [
            producer.send(topic, key=m.key, value=m.value, headers=list(m.headers)) for m in msgs
        ]
        producer.flush(timeout=30)
        offsets = [f.get(timeout=30).offset for f in futures]
        if acks != 0:  # acks=0 gets no answer: kafka-python makes up the offsets
            assert offsets == list(range(50))
        # The connection is still in sync: a later acknowledged send gets its offset.
        producer.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1)
        assert producer.send(topic, value=b"last").get(timeout=30).offset == 50
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = read(consumer, 51)
    finally:
        consumer.close()
    assert [(g.offset, g.msg) for g in got] == [
        *enumerate(msgs),
        (50, Msg(None, b"last")),
    ]


def test_clients_ride_through_a_restart(broker: RestartableBroker, topic: str) -> None:
    """The same (idempotent) producer and group consumer keep working across a restart and
    read exactly what was produced after it (everything before was committed); the log holds
    every record once. (test_group_restart.py checks that the group itself survives the
    restart, so the consumer's next commit succeeds without a rejoin.)"""
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 3)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, compression_type="zstd")
    group = f"{topic}-group"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_TIMEOUTS,
    )
    try:
        first = send_all(producer, topic, messages("a", 30))
        assert_same_log(read(consumer, 30), first)
        consumer.commit()

        broker.restart()

        with admin(bootstrap) as a:

            def rejoined() -> bool:
                assert consumer.poll(timeout_ms=1000) == {}
                return bool(a.describe_groups([group])[group]["group_state"] == "Stable")

            wait_until(rejoined, 30, "the consumer to rejoin after the restart")
        second = send_all(producer, topic, messages("b", 30, start=30))
        assert_same_log(read(consumer, 30), second)
        consumer.commit()
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=10)
    everything = Sent(first.placed + second.placed)
    fresh = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        fresh.assign(parts)
        fresh.seek_to_beginning(*parts)
        assert_same_log(read(fresh, 60), everything)
    finally:
        fresh.close()


# -- idempotence -------------------------------------------------------------------------------


def test_idempotent_producer_sequences(broker: RestartableBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 2)
    msgs = messages("idem", 200)
    sent = produce(
        bootstrap, topic, msgs, enable_idempotence=True, acks="all", compression_type="snappy"
    )
    assert_in_send_order(sent, msgs)
    batches = stored_batches(broker.data_dir, topic)
    assert {b.producer_id for b in batches} != {-1}
    assert len({b.producer_id for b in batches}) == 1
    for p in (0, 1):
        mine = sorted((b for b in batches if b.partition == p), key=lambda b: b.base_offset)
        # Sequence numbers start at 0 and follow offsets record for record: nothing was lost
        # or appended twice.
        assert [b.base_sequence for b in mine] == [b.base_offset for b in mine]


# -- offsets -----------------------------------------------------------------------------------


def test_offsets_for_times_and_watermarks(broker: RestartableBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 1)
    base = 1_700_000_000_000
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1000, compression_type="zstd")
    try:
        # One compressed batch holding several timestamps: the lookup must look inside it.
        futures = [
            producer.send(topic, value=b"v%d-" % i + b"x" * 100, timestamp_ms=base + 1000 * i)
            for i in range(10)
        ]
        producer.flush()
        assert [f.get(10).offset for f in futures] == list(range(10))
    finally:
        producer.close()
    assert [(b.records, b.codec) for b in stored_batches(broker.data_dir, topic)] == [(10, "zstd")]
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 10}
        found = consumer.offsets_for_times({tp: base + 3000})[tp]
        assert (found.offset, found.timestamp) == (3, base + 3000)
        found = consumer.offsets_for_times({tp: base + 3500})[tp]
        assert (found.offset, found.timestamp) == (4, base + 4000)
        found = consumer.offsets_for_times({tp: 0})[tp]
        assert (found.offset, found.timestamp) == (0, base)
        assert consumer.offsets_for_times({tp: base + 60_000})[tp] is None
        # Reading from the offset found starts mid-batch: the broker sends the whole batch and
        # the client drops the records before the offset asked for.
        consumer.assign([tp])
        consumer.seek(tp, 3)
        assert [(g.offset, g.msg.value) for g in read(consumer, 7)] == [
            (i, b"v%d-" % i + b"x" * 100) for i in range(3, 10)
        ]
    finally:
        consumer.close()


# -- errors and limits -------------------------------------------------------------------------


def test_unknown_topic_without_auto_create(tmp_path: Any) -> None:
    with Broker(tmp_path / "data", auto_create_topics=False) as b:
        with admin(b.bootstrap_servers) as a:
            [described] = a.describe_topics(["no-such-topic"])
            assert described["error_code"] == kerr.UnknownTopicOrPartitionError.errno
            assert described["partitions"] == []
            assert "no-such-topic" not in a.list_topics()
        producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, max_block_ms=1500)
        try:
            with pytest.raises(kerr.KafkaTimeoutError):
                producer.send("no-such-topic", b"x").get(timeout=10)
        finally:
            producer.close(timeout=5)
        with admin(b.bootstrap_servers) as a:
            assert "no-such-topic" not in a.list_topics()


def test_large_messages(broker: RestartableBroker, topic: str) -> None:
    """A record just under max.message.bytes round-trips; one over it is refused with
    MESSAGE_TOO_LARGE and the broker keeps serving the same connection's producer."""
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 1)
    near = bytes(range(256)) * 4090  # 1,047,040 bytes: a batch just under 1,048,588
    over = b"o" * (1048588 + 1)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024, enable_idempotence=False
    )
    try:
        assert producer.send(topic, key=b"near", value=near).get(timeout=30).offset == 0
        with pytest.raises(kerr.MessageSizeTooLargeError):
            producer.send(topic, key=b"over", value=over).get(timeout=30)
        assert producer.send(topic, key=b"after", value=b"small").get(timeout=30).offset == 1
    finally:
        producer.close()
    # Fetch limits far below the record: the broker still returns the first batch (KIP-74).
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,
        fetch_max_bytes=1024,
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = read(consumer, 2)
    finally:
        consumer.close()
    assert [(g.offset, g.msg.key, g.msg.value) for g in got] == [
        (0, b"near", near),
        (1, b"after", b"small"),
    ]
