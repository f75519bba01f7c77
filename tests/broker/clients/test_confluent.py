"""confluent-kafka (librdkafka) against strom: admin, every codec, groups across a restart,
idempotence, offsets, limits."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from strom.broker import Broker

GROUP_CONFIG = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
}


def create_topic(bootstrap: str, topic: str, partitions: int, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=configs)],
        operation_timeout=10,
    )
    futures[topic].result(timeout=30)


class Recorder:
    """A producer with delivery reports collected into a :class:`Sent`."""

    def __init__(self, bootstrap: str, **config: Any) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
        self.sent = Sent()
        self.errors: list[tuple[Msg, KafkaError]] = []

    def send(self, topic: str, msgs: Sequence[Msg], **extra: Any) -> None:
        for m in msgs:

            def report(err: KafkaError | None, record: Any, m: Msg = m) -> None:
                if err is not None:
                    self.errors.append((m, err))
                else:
                    self.sent.add(record.partition(), record.offset(), m)

            self.producer.produce(
                topic,
                key=m.key,
                value=m.value,
                headers=list(m.headers),
                on_delivery=report,
                **extra,
            )
        assert self.producer.flush(30) == 0, "messages still queued after 30 s"


def produce(bootstrap: str, topic: str, msgs: Sequence[Msg], **config: Any) -> Sent:
    recorder = Recorder(bootstrap, **config)
    recorder.send(topic, msgs)
    assert recorder.errors == []
    return recorder.sent


def to_got(record: Any) -> Got:
    headers = tuple((k, v) for k, v in record.headers() or [])
    return Got(record.partition(), record.offset(), Msg(record.key(), record.value(), headers))


def read(consumer: Consumer, count: int, timeout: float = 30.0) -> list[Got]:
    """Consume until ``count`` records have arrived (more would show up as a mismatch)."""
    got: list[Got] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"read {len(got)} of {count} records: {got[-3:]}"
        for record in consumer.consume(num_messages=count - len(got), timeout=0.2):
            if record.error() is not None:
                if record.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(record.error())
            got.append(to_got(record))
    return got


@contextmanager
def consumer(bootstrap: str, **config: Any) -> Iterator[Consumer]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", **config})
    try:
        yield c
    finally:
        c.close()


def read_from_beginning(
    bootstrap: str, topic: str, partitions: int, count: int, **config: Any
) -> list[Got]:
    """Read without a group (assign + beginning)."""
    with consumer(bootstrap, **{"enable.auto.commit": False, **config}) as c:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        return read(c, count)


def test_admin_creates_and_describes_topics(broker: RestartableBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 3, **{"retention.ms": "60000"})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=10)
    assert sorted(md.topics[topic].partitions) == [0, 1, 2]
    assert md.topics[topic].error is None
    with pytest.raises(KafkaException) as exc:
        create_topic(bootstrap, topic, 1)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as exc:
        admin.create_topics([NewTopic(topic + "-rf3", 1, 3)])[topic + "-rf3"].result(10)
    assert exc.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR

    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(10)
    assert entries["retention.ms"].value == "60000"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert entries["segment.bytes"].is_default
    admin.create_partitions([NewPartitions(topic, 5)])[topic].result(10)
    assert sorted(admin.list_topics(timeout=10).topics[topic].partitions) == [0, 1, 2, 3, 4]
    admin.delete_topics([topic])[topic].result(10)
    assert topic not in admin.list_topics(timeout=10).topics


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_codec(broker: RestartableBroker, topic: str, codec: str) -> None:
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 3)
    msgs = make_messages(codec, 60)
    # One batch per partition (flush sends at once): clients skip compressing tiny batches.
    sent = produce(bootstrap, topic, msgs, **{"compression.type": codec, "linger.ms": 1000})
    assert_in_send_order(sent, msgs)
    got = read_from_beginning(bootstrap, topic, 3, len(msgs))
    assert_same_log(got, sent)
    assert len(by_partition(got)) == 3
    assert {b.codec for b in stored_batches(broker.data_dir, topic)} == {codec}


def test_group_commit_survives_restart(broker: RestartableBroker, topic: str) -> None:
    """Commit part of what was read, restart, produce more: the group resumes exactly at the
    committed offsets."""
    bootstrap = broker.bootstrap_servers
    group = {"group.id": f"{topic}-group", **GROUP_CONFIG}
    create_topic(bootstrap, topic, 3)
    first = produce(bootstrap, topic, make_messages("a", 40), **{"compression.type": "lz4"})
    with consumer(bootstrap, **group) as c:
        c.subscribe([topic])
        got = read(c, 40)
        assert_same_log(got, first)
        commit_at = {p: len(rs) // 2 for p, rs in by_partition(got).items()}
        c.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in commit_at.items()],
            asynchronous=False,
        )

    broker.restart()

    second = produce(
        bootstrap, topic, make_messages("b", 30, start=40), **{"compression.type": "gzip"}
    )
    expected = Sent([g for g in first.placed if g.offset >= commit_at[g.partition]])
    expected.placed.extend(second.placed)
    with consumer(bootstrap, **group) as c:
        committed = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == commit_at
        c.subscribe([topic])
        resumed = read(c, len(expected.placed))
        assert_same_log(resumed, expected)
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    ends = {p: max(g.offset for g in gs) + 1 for p, gs in by_partition(expected.placed).items()}
    assert {tp.partition: tp.offset for tp in committed} == ends


def test_clients_ride_through_a_restart(broker: RestartableBroker, topic: str) -> None:
    """The same (idempotent) producer and group consumer keep working across a restart and
    read exactly what was produced after it (everything before was committed); the log holds
    every record once. (test_group_restart.py checks that the group itself survives the
    restart, so the consumer's next commit succeeds without a rejoin.)"""
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 3)
    recorder = Recorder(bootstrap, **{"enable.idempotence": True, "compression.type": "zstd"})
    recorder.send(topic, make_messages("a", 30))
    group = f"{topic}-group"
    with consumer(bootstrap, **{"group.id": group, **GROUP_CONFIG}) as c:
        c.subscribe([topic])
        assert_same_log(read(c, 30), recorder.sent)
        c.commit(asynchronous=False)

        broker.restart()

        admin = AdminClient({"bootstrap.servers": bootstrap})

        def rejoined() -> bool:
            assert c.consume(num_messages=10, timeout=0.1) == []
            state = admin.describe_consumer_groups([group])[group].result(10).state
            return bool(state == ConsumerGroupState.STABLE)

        wait_until(rejoined, 30, "the consumer to rejoin after the restart")

        before = len(recorder.sent.placed)
        recorder.send(topic, make_messages("b", 30, start=30))
        assert recorder.errors == []
        after = Sent(recorder.sent.placed[before:])
        assert_same_log(read(c, 30), after)
    # Nothing was written twice across the restart.
    got = read_from_beginning(bootstrap, topic, 3, 60)
    assert_same_log(got, recorder.sent)


def test_idempotent_producer_sequences(broker: RestartableBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 2)
    msgs = make_messages("idem", 300)
    sent = produce(
        bootstrap,
        topic,
        msgs,
        **{"enable.idempotence": True, "compression.type": "snappy", "batch.num.messages": 7},
    )
    assert_in_send_order(sent, msgs)
    batches = stored_batches(broker.data_dir, topic)
    assert len({b.producer_id for b in batches}) == 1
    assert batches[0].producer_id >= 0
    assert len(batches) > 10, "small batches: several in flight at once"
    for p in (0, 1):
        mine = sorted((b for b in batches if b.partition == p), key=lambda b: b.base_offset)
        assert [b.base_sequence for b in mine] == [b.base_offset for b in mine]
    assert_same_log(read_from_beginning(bootstrap, topic, 2, len(msgs)), sent)


def test_offsets_for_times_and_watermarks(broker: RestartableBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 1)
    base = 1_700_000_000_000
    recorder = Recorder(bootstrap, **{"compression.type": "zstd", "linger.ms": 1000})
    for i in range(10):
        recorder.producer.produce(topic, value=b"v%d-" % i + b"x" * 100, timestamp=base + 1000 * i)
    assert recorder.producer.flush(30) == 0
    assert [(b.records, b.codec) for b in stored_batches(broker.data_dir, topic)] == [(10, "zstd")]
    with consumer(bootstrap) as c:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 10)
        found = {
            ts: c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)[0].offset
            for ts in (base + 3000, base + 3500, 0, base + 60_000)
        }
        assert found == {base + 3000: 3, base + 3500: 4, 0: 0, base + 60_000: -1}
        # Reading from the offset found starts mid-batch: the broker sends the whole batch and
        # the client drops the records before the offset asked for.
        c.assign([TopicPartition(topic, 0, 3)])
        assert [(g.offset, g.msg.value) for g in read(c, 7)] == [
            (i, b"v%d-" % i + b"x" * 100) for i in range(3, 10)
        ]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, 0)
    specs = {
        "earliest": OffsetSpec.earliest(),
        "latest": OffsetSpec.latest(),
        "max": OffsetSpec.max_timestamp(),
        "at": OffsetSpec.for_timestamp(base + 7000),
    }
    answers = {name: admin.list_offsets({tp: spec})[tp].result(10) for name, spec in specs.items()}
    assert {n: a.offset for n, a in answers.items()} == {
        "earliest": 0,
        "latest": 10,
        "max": 9,
        "at": 7,
    }
    assert answers["max"].timestamp == base + 9000
    assert answers["at"].timestamp == base + 7000


def test_unknown_topic_without_auto_create(tmp_path: Path) -> None:
    with Broker(tmp_path / "data", auto_create_topics=False) as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap_servers})
        md = admin.list_topics(topic="no-such-topic", timeout=10)
        assert md.topics["no-such-topic"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        recorder = Recorder(b.bootstrap_servers, **{"topic.metadata.propagation.max.ms": 200})
        recorder.send("no-such-topic", [Msg(b"k", b"v")])
        assert [(m, e.code()) for m, e in recorder.errors] == [
            (Msg(b"k", b"v"), KafkaError.UNKNOWN_TOPIC_OR_PART)
        ]
        assert "no-such-topic" not in admin.list_topics(timeout=10).topics


def test_large_messages(broker: RestartableBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    create_topic(bootstrap, topic, 1)
    near = bytes(range(256)) * 4090
    over = b"o" * (1048588 + 1)
    # The client's own limit is raised so that the broker is the one to refuse.
    recorder = Recorder(bootstrap, **{"message.max.bytes": 4_000_000})
    recorder.send(topic, [Msg(b"near", near), Msg(b"over", over)])
    recorder.send(topic, [Msg(b"after", b"small")])
    assert [(m.key, e.code()) for m, e in recorder.errors] == [
        (b"over", KafkaError.MSG_SIZE_TOO_LARGE)
    ]
    # A fetch limit far below the record: the broker still returns the first batch (KIP-74).
    got = read_from_beginning(bootstrap, topic, 1, 2, **{"max.partition.fetch.bytes": 1024})
    assert [(g.offset, g.msg.key, g.msg.value) for g in got] == [
        (0, b"near", near),
        (1, b"after", b"small"),
    ]
