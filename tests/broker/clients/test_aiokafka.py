"""aiokafka against strom: admin, every codec, groups across a restart, offsets, limits.

Each test runs its own event loop (``asyncio.run``), so no asyncio pytest plugin is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiokafka.errors as aerr
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
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
)

from strom.broker import Broker

GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=90))


async def create_topic(bootstrap: str, topic: str, partitions: int, **configs: str) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, msgs: Sequence[Msg], sent: Sent | None = None, **config: Any
) -> Sent:
    """Send ``msgs`` in order with one producer; record where each landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **{"linger_ms": 5, **config})
    await producer.start()
    try:
        return await send_all(producer, topic, msgs, sent)
    finally:
        await producer.stop()


async def send_all(
    producer: AIOKafkaProducer, topic: str, msgs: Sequence[Msg], sent: Sent | None = None
) -> Sent:
    sent = sent if sent is not None else Sent()
    futures = [
        await producer.send(topic, key=m.key, value=m.value, headers=list(m.headers)) for m in msgs
    ]
    for m, meta in zip(msgs, await asyncio.gather(*futures), strict=True):
        sent.add(meta.partition, meta.offset, m)
    return sent


def to_got(record: Any) -> Got:
    headers = tuple((k, v) for k, v in record.headers)
    return Got(record.partition, record.offset, Msg(record.key, record.value, headers))


async def read(consumer: AIOKafkaConsumer, count: int, timeout: float = 30.0) -> list[Got]:
    """Fetch until ``count`` records have arrived (more would show up as a mismatch)."""
    got: list[Got] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"read {len(got)} of {count} records: {got[-3:]}"
        for records in (await consumer.getmany(timeout_ms=200)).values():
            got.extend(to_got(r) for r in records)
    return got


def test_admin_creates_and_describes_topics(broker: RestartableBroker, topic: str) -> None:
    async def main() -> None:
        response = await create_topic(
            broker.bootstrap_servers, topic, 3, **{"retention.ms": "60000"}
        )
        assert [(t[0], t[1]) for t in response.topic_errors] == [(topic, 0)]
        again = await create_topic(broker.bootstrap_servers, topic, 1)
        assert [(t[0], t[1]) for t in again.topic_errors] == [
            (topic, aerr.TopicAlreadyExistsError.errno)
        ]
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            assert topic in await admin.list_topics()
            [described] = await admin.describe_topics([topic])
            assert described["error_code"] == 0
            assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]
        finally:
            await admin.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_codec(broker: RestartableBroker, topic: str, codec: str) -> None:
    async def main() -> None:
        bootstrap = broker.bootstrap_servers
        await create_topic(bootstrap, topic, 3)
        msgs = make_messages(codec, 60)
        compression = None if codec == "none" else codec
        # One batch per partition: clients skip compressing batches that would not shrink.
        sent = await produce(bootstrap, topic, msgs, compression_type=compression, linger_ms=300)
        assert_in_send_order(sent, msgs)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(3)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            got = await read(consumer, len(msgs))
        finally:
            await consumer.stop()
        assert_same_log(got, sent)
        assert len(by_partition(got)) == 3

    run(main())
    assert {b.codec for b in stored_batches(broker.data_dir, topic)} == {codec}


def _group_consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_TIMEOUTS,
    )


def test_group_commit_survives_restart(broker: RestartableBroker, topic: str) -> None:
    """Commit part of what was read, restart, produce more: the group resumes exactly at the
    committed offsets."""
    bootstrap = broker.bootstrap_servers
    group = f"{topic}-group"

    async def before() -> tuple[Sent, dict[int, int]]:
        await create_topic(bootstrap, topic, 3)
        first = await produce(bootstrap, topic, make_messages("a", 40), compression_type="zstd")
        consumer = _group_consumer(bootstrap, topic, group)
        await consumer.start()
        try:
            got = await read(consumer, 40)
            assert_same_log(got, first)
            commit_at = {p: len(rs) // 2 for p, rs in by_partition(got).items()}
            await consumer.commit({TopicPartition(topic, p): o for p, o in commit_at.items()})
        finally:
            await consumer.stop()
        return first, commit_at

    first, commit_at = run(before())
    broker.restart()

    async def after() -> None:
        second = await produce(
            bootstrap, topic, make_messages("b", 30, start=40), compression_type="snappy"
        )
        expected = Sent([g for g in first.placed if g.offset >= commit_at[g.partition]])
        expected.placed.extend(second.placed)
        consumer = _group_consumer(bootstrap, topic, group)
        await consumer.start()
        try:
            for p, o in commit_at.items():
                assert await consumer.committed(TopicPartition(topic, p)) == o
            resumed = await read(consumer, len(expected.placed))
            assert_same_log(resumed, expected)
            await consumer.commit()
            for p, gs in by_partition(expected.placed).items():
                end = max(g.offset for g in gs) + 1
                assert await consumer.committed(TopicPartition(topic, p)) == end
        finally:
            await consumer.stop()

    run(after())


def test_clients_ride_through_a_restart(broker: RestartableBroker, topic: str) -> None:
    """The same (idempotent) producer and group consumer keep working across a restart and
    read exactly what was produced after it (everything before was committed); the log holds
    every record once. (test_group_restart.py checks that the group itself survives the
    restart, so the consumer's next commit succeeds without a rejoin.)"""
    bootstrap = broker.bootstrap_servers

    async def main() -> None:
        await create_topic(bootstrap, topic, 3)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, compression_type="lz4"
        )
        group = f"{topic}-group"
        consumer = _group_consumer(bootstrap, topic, group)
        await producer.start()
        await consumer.start()
        try:
            first = await send_all(producer, topic, make_messages("a", 30))
            assert_same_log(await read(consumer, 30), first)
            await consumer.commit()

            await asyncio.to_thread(broker.restart)

            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                deadline = time.monotonic() + 30
                while True:
                    assert await consumer.getmany(timeout_ms=100) == {}
                    [described] = await admin.describe_consumer_groups([group])
                    if described.groups[0][2] == "Stable":
                        break
                    assert time.monotonic() < deadline, "the consumer never rejoined"
            finally:
                await admin.close()

            second = await send_all(producer, topic, make_messages("b", 30, start=30))
            assert_same_log(await read(consumer, 30), second)
            await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()
        fresh = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await fresh.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(3)]
            fresh.assign(parts)
            await fresh.seek_to_beginning(*parts)
            assert_same_log(await read(fresh, 60), Sent(first.placed + second.placed))
        finally:
            await fresh.stop()

    run(main())


def test_idempotent_producer_sequences(broker: RestartableBroker, topic: str) -> None:
    msgs = make_messages("idem", 200)

    async def main() -> Sent:
        await create_topic(broker.bootstrap_servers, topic, 2)
        return await produce(
            broker.bootstrap_servers, topic, msgs, enable_idempotence=True, compression_type="lz4"
        )

    sent = run(main())
    assert_in_send_order(sent, msgs)
    batches = stored_batches(broker.data_dir, topic)
    assert len({b.producer_id for b in batches}) == 1
    assert batches[0].producer_id >= 0
    for p in (0, 1):
        mine = sorted((b for b in batches if b.partition == p), key=lambda b: b.base_offset)
        assert [b.base_sequence for b in mine] == [b.base_offset for b in mine]


def test_offsets_for_times_and_watermarks(broker: RestartableBroker, topic: str) -> None:
    base = 1_700_000_000_000

    async def main() -> None:
        bootstrap = broker.bootstrap_servers
        await create_topic(bootstrap, topic, 1)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=300, compression_type="gzip"
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    topic, value=b"v%d-" % i + b"x" * 100, timestamp_ms=base + 1000 * i
                )
                for i in range(10)
            ]
            assert [m.offset for m in await asyncio.gather(*futures)] == list(range(10))
        finally:
            await producer.stop()
        tp = TopicPartition(topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            assert await consumer.beginning_offsets([tp]) == {tp: 0}
            assert await consumer.end_offsets([tp]) == {tp: 10}
            found = (await consumer.offsets_for_times({tp: base + 3000}))[tp]
            assert (found.offset, found.timestamp) == (3, base + 3000)
            found = (await consumer.offsets_for_times({tp: base + 3500}))[tp]
            assert (found.offset, found.timestamp) == (4, base + 4000)
            assert (await consumer.offsets_for_times({tp: base + 60_000}))[tp] is None
        finally:
            await consumer.stop()

    run(main())
    assert [(b.records, b.codec) for b in stored_batches(broker.data_dir, topic)] == [(10, "gzip")]


def test_unknown_topic_without_auto_create(tmp_path: Path) -> None:
    async def main(bootstrap: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics(["no-such-topic"])
            assert described["error_code"] == aerr.UnknownTopicOrPartitionError.errno
            assert described["partitions"] == []
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=1500)
        await producer.start()
        try:
            # aiokafka surfaces the broker's answer directly.
            with pytest.raises(aerr.UnknownTopicOrPartitionError):
                await producer.send_and_wait("no-such-topic", b"x")
        finally:
            await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            assert "no-such-topic" not in await admin.list_topics()
        finally:
            await admin.close()

    with Broker(tmp_path / "data", auto_create_topics=False) as b:
        run(main(b.bootstrap_servers))


def test_large_messages(broker: RestartableBroker, topic: str) -> None:
    near = bytes(range(256)) * 4090
    over = b"o" * (1048588 + 1)

    async def main() -> None:
        bootstrap = broker.bootstrap_servers
        await create_topic(bootstrap, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
        await producer.start()
        try:
            assert (await producer.send_and_wait(topic, near, key=b"near")).offset == 0
            with pytest.raises(aerr.MessageSizeTooLargeError):
                await producer.send_and_wait(topic, over, key=b"over")
            assert (await producer.send_and_wait(topic, b"small", key=b"after")).offset == 1
        finally:
            await producer.stop()
        # Fetch limits far below the record: the broker still returns the first batch (KIP-74).
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=1024,
            fetch_max_bytes=1024,
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got = await read(consumer, 2)
        finally:
            await consumer.stop()
        assert [(g.offset, g.msg.key, g.msg.value) for g in got] == [
            (0, b"near", near),
            (1, b"after", b"small"),
        ]

    run(main())
