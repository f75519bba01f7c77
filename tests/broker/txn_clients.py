"""One small transactional API over confluent-kafka, kafka-python and aiokafka, for the tests.

Each adapter drives its client's own producer (init, begin, send, send offsets, commit, abort)
and its own consumer (read a topic under an isolation level), so every transactional check runs
unchanged against all three clients. aiokafka is asyncio: its adapter runs each producer on a
private event loop, so the tests stay synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

#: How long a test waits for records that should come (nothing waits for records that must not).
READ_TIMEOUT_S = 15.0
#: Records per poll of a consume-transform-produce member.
BATCH = 20


class TxnProducer(Protocol):
    def init(self) -> None: ...
    def begin(self) -> None: ...
    def send(self, topic: str, value: bytes, partition: int | None = None) -> None: ...
    def flush(self) -> None: ...
    def send_offsets(self, offsets: dict[tuple[str, int], int], consumer: Any) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


class TxnConsumer(Protocol):
    """A group member reading under read_committed with auto-commit off, for a
    consume-transform-produce loop: ``handle`` is what ``send_offsets`` takes for its group."""

    handle: Any

    def poll(self) -> list[tuple[bytes, str, int, int]]:
        """Up to a batch of (value, topic, partition, offset), waiting up to half a second."""
        ...

    def close(self) -> None: ...


class Client(Protocol):
    name: str

    def member(
        self, bootstrap: str, group: str, topic: str, producer: TxnProducer
    ) -> TxnConsumer: ...

    def producer(self, bootstrap: str, tid: str, *, timeout_ms: int = 60_000) -> TxnProducer: ...

    def read(self, bootstrap: str, topic: str, isolation: str, count: int) -> list[bytes]:
        """Values from the start of ``topic``: until ``count`` arrived (and a little after, to
        catch extras), or until the read times out."""
        ...


def _read_until(poll: Callable[[], list[bytes]], count: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    while time.monotonic() < deadline and len(got) < count:
        got += poll()
    # A short grace period: a read_committed bug shows up as records beyond the expected ones.
    grace = time.monotonic() + 1.0
    while time.monotonic() < grace:
        got += poll()
    return got


# -- confluent-kafka ----------------------------------------------------------------------------


class ConfluentProducer:
    def __init__(self, bootstrap: str, tid: str, timeout_ms: int) -> None:
        from confluent_kafka import Producer

        self.p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "transactional.id": tid,
                "transaction.timeout.ms": timeout_ms,
                "linger.ms": 5,
            }
        )

    def init(self) -> None:
        self.p.init_transactions(30)

    def begin(self) -> None:
        self.p.begin_transaction()

    def send(self, topic: str, value: bytes, partition: int | None = None) -> None:
        if partition is None:
            self.p.produce(topic, value)
        else:
            self.p.produce(topic, value, partition=partition)

    def flush(self) -> None:
        assert self.p.flush(30) == 0

    def send_offsets(self, offsets: dict[tuple[str, int], int], consumer: Any) -> None:
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self.p.send_offsets_to_transaction(tps, consumer.consumer_group_metadata(), 30)

    def commit(self, timeout: float = 30) -> None:
        self.p.commit_transaction(timeout)

    def abort(self, timeout: float = 30) -> None:
        self.p.abort_transaction(timeout)

    def close(self) -> None:
        from confluent_kafka import KafkaException

        with contextlib.suppress(KafkaException):  # a fenced producer refuses even this
            self.p.purge()
            self.p.flush(0)


class ConfluentMember:
    def __init__(self, consumer: Any, topic: str) -> None:
        self.handle = consumer
        consumer.subscribe([topic])

    def poll(self) -> list[tuple[bytes, str, int, int]]:
        messages = self.handle.consume(BATCH, 0.5)
        return [
            (m.value(), m.topic(), m.partition(), m.offset()) for m in messages if not m.error()
        ]

    def close(self) -> None:
        self.handle.close()


class Confluent:
    name = "confluent-kafka"

    def producer(self, bootstrap: str, tid: str, *, timeout_ms: int = 60_000) -> TxnProducer:
        return ConfluentProducer(bootstrap, tid, timeout_ms)

    def consumer(self, bootstrap: str, group: str, isolation: str = "read_committed") -> Any:
        from confluent_kafka import Consumer

        return Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": isolation,
            }
        )

    def member(self, bootstrap: str, group: str, topic: str, producer: TxnProducer) -> TxnConsumer:
        return ConfluentMember(self.consumer(bootstrap, group), topic)

    def read(self, bootstrap: str, topic: str, isolation: str, count: int) -> list[bytes]:
        c = self.consumer(bootstrap, f"reader-{topic}-{isolation}-{time.monotonic_ns()}", isolation)
        c.subscribe([topic])

        def poll() -> list[bytes]:
            return [m.value() for m in c.consume(100, 0.2) if m.error() is None]

        try:
            return _read_until(poll, count)
        finally:
            c.close()


# -- kafka-python -------------------------------------------------------------------------------


class KafkaPythonProducer:
    def __init__(self, bootstrap: str, tid: str, timeout_ms: int) -> None:
        from kafka import KafkaProducer

        self.p = KafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=tid, transaction_timeout_ms=timeout_ms
        )

    def init(self) -> None:
        self.p.init_transactions()

    def begin(self) -> None:
        self.p.begin_transaction()

    def send(self, topic: str, value: bytes, partition: int | None = None) -> None:
        self.p.send(topic, value, partition=partition)

    def flush(self) -> None:
        self.p.flush(30)

    def send_offsets(self, offsets: dict[tuple[str, int], int], consumer: Any) -> None:
        from kafka import OffsetAndMetadata, TopicPartition

        self.p.send_offsets_to_transaction(
            {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()},
            consumer if isinstance(consumer, str) else consumer.group_metadata(),
        )

    def commit(self) -> None:
        self.p.commit_transaction()

    def abort(self) -> None:
        self.p.abort_transaction()

    def close(self) -> None:
        self.p.close(timeout=0)


class KafkaPythonMember:
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.handle = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )

    def poll(self) -> list[tuple[bytes, str, int, int]]:
        batches = self.handle.poll(timeout_ms=500, max_records=BATCH)
        return [(r.value, r.topic, r.partition, r.offset) for rs in batches.values() for r in rs]

    def close(self) -> None:
        self.handle.close()


class KafkaPython:
    name = "kafka-python"

    def member(self, bootstrap: str, group: str, topic: str, producer: TxnProducer) -> TxnConsumer:
        return KafkaPythonMember(bootstrap, group, topic)

    def producer(self, bootstrap: str, tid: str, *, timeout_ms: int = 60_000) -> TxnProducer:
        return KafkaPythonProducer(bootstrap, tid, timeout_ms)

    def read(self, bootstrap: str, topic: str, isolation: str, count: int) -> list[bytes]:
        from kafka import KafkaConsumer

        c = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            isolation_level=isolation,
        )

        def poll() -> list[bytes]:
            batches = c.poll(timeout_ms=200)
            return [r.value for records in batches.values() for r in records]

        try:
            return _read_until(poll, count)
        finally:
            c.close()


# -- aiokafka -----------------------------------------------------------------------------------


class AioProducer:
    def __init__(self, bootstrap: str, tid: str, timeout_ms: int) -> None:
        self.loop = asyncio.new_event_loop()

        async def make() -> Any:
            from aiokafka import AIOKafkaProducer

            return AIOKafkaProducer(
                bootstrap_servers=bootstrap,
                transactional_id=tid,
                transaction_timeout_ms=timeout_ms,
            )

        self.p = self._run(make())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def init(self) -> None:
        self._run(self.p.start())

    def begin(self) -> None:
        self._run(self.p.begin_transaction())

    def send(self, topic: str, value: bytes, partition: int | None = None) -> None:
        self._run(self.p.send(topic, value, partition=partition))

    def flush(self) -> None:
        self._run(self.p.flush())

    def send_offsets(self, offsets: dict[tuple[str, int], int], consumer: Any) -> None:
        from aiokafka import TopicPartition

        group = consumer if isinstance(consumer, str) else consumer.group_id
        self._run(
            self.p.send_offsets_to_transaction(
                {TopicPartition(t, p): o for (t, p), o in offsets.items()}, group
            )
        )

    def commit(self) -> None:
        self._run(self.p.commit_transaction())

    def abort(self) -> None:
        self._run(self.p.abort_transaction())

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a fenced producer may fail to stop cleanly
            self._run(asyncio.wait_for(self.p.stop(), 10))
        self.loop.close()


class AioMember:
    """An aiokafka consumer on its producer's event loop (one loop per simulated process)."""

    def __init__(self, bootstrap: str, group: str, topic: str, producer: AioProducer) -> None:
        self.loop = producer.loop
        self.handle = group

        async def make() -> Any:
            from aiokafka import AIOKafkaConsumer

            c = AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                isolation_level="read_committed",
            )
            await c.start()
            return c

        self.c = self.loop.run_until_complete(make())

    def poll(self) -> list[tuple[bytes, str, int, int]]:
        batches = self.loop.run_until_complete(self.c.getmany(timeout_ms=500, max_records=BATCH))
        return [(r.value, r.topic, r.partition, r.offset) for rs in batches.values() for r in rs]

    def close(self) -> None:
        self.loop.run_until_complete(self.c.stop())


class Aio:
    name = "aiokafka"

    def member(self, bootstrap: str, group: str, topic: str, producer: TxnProducer) -> TxnConsumer:
        assert isinstance(producer, AioProducer)
        return AioMember(bootstrap, group, topic, producer)

    def producer(self, bootstrap: str, tid: str, *, timeout_ms: int = 60_000) -> TxnProducer:
        return AioProducer(bootstrap, tid, timeout_ms)

    def read(self, bootstrap: str, topic: str, isolation: str, count: int) -> list[bytes]:
        from aiokafka import AIOKafkaConsumer

        async def main() -> list[bytes]:
            c = AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                auto_offset_reset="earliest",
                isolation_level=isolation,
            )
            await c.start()
            got: list[bytes] = []
            try:
                deadline = time.monotonic() + READ_TIMEOUT_S
                while time.monotonic() < deadline and len(got) < count:
                    batches = await c.getmany(timeout_ms=200)
                    got += [r.value for records in batches.values() for r in records]
                grace = time.monotonic() + 1.0
                while time.monotonic() < grace:
                    batches = await c.getmany(timeout_ms=200)
                    got += [r.value for records in batches.values() for r in records]
            finally:
                await c.stop()
            return got

        return asyncio.run(main())


CLIENTS: list[Client] = [Confluent(), KafkaPython(), Aio()]
