"""The fetching half of KafkaSource: one librdkafka consumer feeding per-partition buffers.

Partitions are assigned manually (no group membership, so no rebalancing); ``group.id`` only
names the group whose offsets are read and committed. ``KafkaSource(client="librdkafka")`` uses
it (SASL, TLS, managed clusters); :mod:`strom.connectors.kafka.native_fetch` is strom's own
fetcher behind the same interface. Records become columns in :mod:`strom.connectors.kafka.batch`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from strom.connectors.kafka.common import (
    CONNECT_TIMEOUT_S,
    ClientErrors,
    KafkaConnectorError,
    client_config,
    partition_count,
)

__all__ = ["Fetcher", "PartitionState", "Start"]

log = logging.getLogger("strom.connectors")

Start = Literal["earliest", "latest", "committed"]

_FATAL_CODES = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED)


@dataclass
class PartitionState:
    """One opened partition. Offsets below ``position`` were handed to the engine."""

    generation: int
    position: int
    fetched: int  # the next offset expected from the consumer; lower ones are stale duplicates
    end: int | None  # bounded: the high watermark observed at open (exclusive)
    buffer: list[Message] = field(default_factory=list)
    eof: int | None = None  # where librdkafka last reported the end of the partition
    assigned: bool = False
    ended: bool = False

    def bounded_done(self) -> bool:
        """Bounded, nothing buffered, and nothing left below ``end`` (offsets may skip, e.g.
        transaction markers, so reaching the partition's end also counts)."""
        if self.end is None or self.buffer:
            return False
        return self.position >= self.end or (self.eof is not None and self.eof >= self.end)

    def take(self, n: int) -> list[Message]:
        taken = self.buffer[:n]
        del self.buffer[:n]
        return taken


class Fetcher:
    """A consumer of ``topic`` shared by all of a source's partition readers."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        group_id: str | None,
        start: Start,
        bounded: bool,
        max_records: int,
        config: Mapping[str, Any] | None,
        errors: ClientErrors,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group_id = group_id
        self.start = start
        self.bounded = bounded
        self.max_records = max_records
        self.states: dict[int, PartitionState] = {}
        self._config = dict(config or {})
        self._errors = errors
        self._consumer: Consumer | None = None
        self._partitions: int | None = None
        self._resolved: dict[int, tuple[int, int | None]] = {}
        self._to_assign: list[TopicPartition] = []
        self._generations = 0

    def consumer(self) -> Consumer:
        if self._consumer is None:
            defaults = {
                "group.id": self.group_id or "strom-kafka-source",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": self.bounded,
                "fetch.wait.max.ms": 100,  # a partition assigned later waits for this, at most
            }
            config = client_config(
                self.bootstrap_servers, "strom-kafka-source", self._errors, defaults, self._config
            )
            self._consumer = Consumer(config)
        return self._consumer

    def partition_count(self) -> int:
        if self._partitions is None:
            self._partitions = partition_count(
                self.consumer(), self.topic, self.bootstrap_servers, self._errors
            )
        return self._partitions

    def open(self, index: int) -> PartitionState:
        """A fresh state for ``index`` at its start offset (superseding any earlier one); it is
        assigned with the next fetch, together with every partition opened meanwhile."""
        if index not in self._resolved:
            self._resolved = self._resolve(self.partition_count())
        first, end = self._resolved.pop(index)
        return self._start(index, first, end)

    def seek(self, index: int, offset: int) -> PartitionState:
        """A fresh state for opened partition ``index`` at ``offset``, keeping its bounded end
        (reassigning it drops what the consumer fetched for the old state)."""
        return self._start(index, offset, self.states[index].end)

    def watermarks(self, index: int) -> tuple[int, int]:
        """Partition ``index``'s earliest and high watermark offsets, asked of the cluster."""
        tp = TopicPartition(self.topic, index)
        try:
            low, high = self.consumer().get_watermark_offsets(
                tp, timeout=CONNECT_TIMEOUT_S, cached=False
            )
        except KafkaException as exc:
            raise KafkaConnectorError(f"cannot read offsets of {self.topic!r}: {exc}") from exc
        return int(low), int(high)

    def high_watermark(self, index: int) -> int | None:
        """The high watermark last seen in a fetch of ``index`` (None before one)."""
        if self._consumer is None:
            return None
        tp = TopicPartition(self.topic, index)
        try:
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return None
        return int(high) if high is not None and high >= 0 else None

    def _start(self, index: int, first: int, end: int | None) -> PartitionState:
        old = self.states.get(index)
        if old is not None and old.assigned:
            self.unassign(index)
        self._generations += 1
        state = PartitionState(self._generations, first, first, end)
        self.states[index] = state
        if end is None or first < end:
            self._to_assign.append(TopicPartition(self.topic, index, first))
            state.assigned = True
        return state

    def unassign(self, index: int) -> None:
        self._to_assign = [tp for tp in self._to_assign if tp.partition != index]
        state = self.states.get(index)
        if state is not None:
            state.assigned = False
        consumer = self._consumer
        if consumer is not None and any(tp.partition == index for tp in consumer.assignment()):
            consumer.incremental_unassign([TopicPartition(self.topic, index)])

    def fill(self, timeout_s: float = 0.0) -> bool:
        """Route the records the consumer has into the partition buffers, waiting at most
        ``timeout_s`` for a first one when none is there; it fetches nothing while
        ``max_records`` are buffered (backpressure). Whether any partition has records."""
        consumer = self.consumer()
        if self._to_assign:
            consumer.incremental_assign(self._to_assign)
            self._to_assign = []
        buffered = sum(len(s.buffer) for s in self.states.values())
        if buffered >= self.max_records:
            return True
        timeout = timeout_s if buffered == 0 else 0.0
        messages = []
        if timeout > 0:  # consume() would wait out the timeout unless a whole batch arrived
            first = consumer.poll(timeout)
            messages = [] if first is None else [first]
        messages += consumer.consume(num_messages=self.max_records - len(messages), timeout=0)
        runs: dict[int | None, list[Message]] = {}
        for message in messages:
            error = message.error()
            if error is None:
                runs.setdefault(message.partition(), []).append(message)
            else:
                self._on_error(message, error)
        for partition, run in runs.items():
            state = self.states.get(partition or 0)
            if state is not None and not state.ended:
                self._route(state, run)
        self._errors.raise_if_fatal()
        if not messages:
            self._past_markers(consumer)
        return bool(messages)  # records, or events (a partition's end) a poll acts on

    def _past_markers(self, consumer: Consumer) -> None:
        """librdkafka's position moves past transaction markers (and aborted records), which
        it never returns: an idle partition's ``fetched`` follows it there."""
        idle = [p for p, s in self.states.items() if s.assigned and not s.ended and not s.buffer]
        if not idle:
            return
        try:
            positions = consumer.position([TopicPartition(self.topic, p) for p in idle])
        except KafkaException:
            return
        for tp in positions:
            state = self.states.get(tp.partition)
            if state is not None and tp.offset is not None and tp.offset > state.fetched:
                state.fetched = tp.offset

    def _route(self, state: PartitionState, run: list[Message]) -> None:
        """Buffer one partition's messages (in offset order), minus stale ones and, if bounded,
        those at or past the end; checking the run's ends is enough in the common case."""
        end = state.end
        if (run[0].offset() or 0) < state.fetched or (
            end is not None and (run[-1].offset() or 0) >= end
        ):
            low, high = state.fetched, end if end is not None else float("inf")
            run = [m for m in run if low <= (m.offset() or 0) < high]
            if not run:
                return
        state.buffer.extend(run)
        state.fetched = (run[-1].offset() or 0) + 1

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit ``offsets`` (partition: next offset) for the group, synchronously."""
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        idle = self._consumer is None
        try:
            self.consumer().commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise KafkaConnectorError(f"cannot commit offsets of {self.topic!r}: {exc}") from exc
        finally:
            if idle:
                self.close()

    def close(self) -> None:
        """Close the consumer (a later call starts a new one); states are kept."""
        self._resolved.clear()
        self._to_assign.clear()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()

    def _resolve(self, count: int) -> dict[int, tuple[int, int | None]]:
        """Every partition's first offset to read and, if bounded, its end.

        All partitions at once, before any is assigned: a request queued behind a fetch that
        is waiting for data would wait for it.
        """
        consumer = self.consumer()
        tps = [TopicPartition(self.topic, p) for p in range(count)]
        try:
            marks = [
                consumer.get_watermark_offsets(tp, timeout=CONNECT_TIMEOUT_S, cached=False)
                for tp in tps
            ]
            committed = (
                [tp.offset for tp in consumer.committed(tps, timeout=CONNECT_TIMEOUT_S)]
                if self.start == "committed"
                else []
            )
        except KafkaException as exc:
            raise KafkaConnectorError(
                f"cannot read offsets of {self.topic!r} at {self.bootstrap_servers}: {exc}"
            ) from exc
        resolved: dict[int, tuple[int, int | None]] = {}
        for p, (low, high) in enumerate(marks):
            if self.start == "earliest":
                first = low
            elif self.start == "latest":
                first = high
            else:  # a group without a committed offset starts at the earliest
                first = committed[p] if committed[p] >= 0 else low
            resolved[p] = (first, high if self.bounded else None)
        return resolved

    def _on_error(self, message: Message, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            state = self.states.get(message.partition() or 0)
            if state is not None and message.offset() is not None:
                state.eof = message.offset()
            return
        if error.fatal() or error.code() in _FATAL_CODES:
            raise KafkaConnectorError(f"cannot consume {self.topic!r}: {error.str()}")
        log.warning("KafkaSource(%r): %s", self.topic, error.str())
