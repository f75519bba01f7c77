"""The Kafka transaction of an exactly-once :class:`~strom.connectors.kafka.sink.KafkaSink`.

One :class:`SinkTransactions` per sink: its transactional producer, one transaction per
checkpoint, and the checkpoint record that makes the transaction the checkpoint's decision.

**The checkpoint record.** Every checkpoint's transaction also commits, through
``send_offsets_to_transaction``, the checkpoint id ``c`` as the offset of partition 0 of the
sink's topic for the consumer group :func:`checkpoint_group` (with metadata
``strom checkpoint <c>``). That group is never consumed: it is the durable, atomic record of the
last checkpoint whose transaction committed, read back by :meth:`committed_checkpoint`. Kafka
commits a transaction's offsets and its records together, so the records of checkpoint ``c``
are visible under read_committed if and only if that group says ``c`` (or later).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from strom.connectors.kafka.common import (
    CONNECT_TIMEOUT_S,
    ClientErrors,
    KafkaConnectorError,
    client_config,
)
from strom.engine.contracts import FencedError

__all__ = [
    "FENCED_CODES",
    "NO_REBOOTSTRAP",
    "KafkaFencedError",
    "SinkTransactions",
    "checkpoint_group",
    "fenced_error",
]

log = logging.getLogger("strom.connectors")

T = TypeVar("T")

#: How long one transactional call (init, offsets, commit, abort) may keep retrying.
TXN_TIMEOUT_S = 30.0
_METADATA = "strom checkpoint "

#: The error codes that say another producer with this transactional id took over.
FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


#: librdkafka >= 2.10 "re-bootstraps" once every broker is down (with one broker: at once),
#: decommissioning the known brokers; a group coordinator it had cached stays the dead handle,
#: and ``send_offsets_to_transaction`` then waits forever (seen with 2.16 and a broker
#: restarted on its address). Reconnecting to the known brokers is what a restart needs.
NO_REBOOTSTRAP: Final = {"metadata.recovery.strategy": "none"}


def checkpoint_group(transactional_id: str) -> str:
    """The consumer group whose offset of the sink topic's partition 0 is the id of the last
    committed checkpoint (see the module docstring)."""
    return f"strom-checkpoints.{transactional_id}"


class SinkTransactions:
    """A transactional producer and the checkpoint record of one sink (see the module doc).

    Every call either succeeds or raises :class:`KafkaConnectorError`; a fenced producer (a
    newer process with the same transactional id has initialized) raises one that says so.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        bootstrap_servers: str,
        topic: str,
        transactional_id: str,
        errors: ClientErrors,
    ) -> None:
        self.topic = topic
        self.transactional_id = transactional_id
        self.bootstrap_servers = bootstrap_servers
        self._errors = errors
        self.producer = Producer(dict(config))
        self._consumers: dict[str, Consumer] = {}
        self.open = False  # a transaction is begun (locally at least)
        self.fenced = False  # a call was refused: another producer has this transactional id
        self._call("initialize the transactional producer", self.producer.init_transactions)

    def begin(self) -> None:
        if not self.open:
            self._call("begin a transaction", self.producer.begin_transaction)
            self.open = True

    def send_checkpoint(self, checkpoint_id: int) -> None:
        """Add the checkpoint record of ``checkpoint_id`` to the open transaction."""
        record = TopicPartition(self.topic, 0, checkpoint_id, f"{_METADATA}{checkpoint_id}")
        self.send_offsets(checkpoint_group(self.transactional_id), [record])

    def send_offsets(self, group: str, offsets: list[TopicPartition]) -> None:
        """Commit ``offsets`` for ``group`` with the open transaction."""
        metadata = self._consumer(group).consumer_group_metadata()
        self._call(
            f"send offsets of group {group!r} to the transaction",
            self.producer.send_offsets_to_transaction,
            offsets,
            metadata,
            TXN_TIMEOUT_S,
        )

    def commit(self) -> None:
        self._call("commit the transaction", self.producer.commit_transaction, TXN_TIMEOUT_S)
        self.open = False

    def abort(self) -> None:
        """Abort the open transaction (none open, or fenced: the newer producer's
        initialization aborted it already)."""
        if self.open and not self.fenced:
            self.open = False
            self._call("abort the transaction", self.producer.abort_transaction, TXN_TIMEOUT_S)

    def committed_checkpoint(self) -> int | None:
        """The id in the checkpoint record, None if there is none (no checkpoint committed)."""
        group = checkpoint_group(self.transactional_id)
        wanted = [TopicPartition(self.topic, 0)]
        [found] = self._call(
            f"read the committed checkpoint (group {group!r})",
            self._consumer(group).committed,
            wanted,
            CONNECT_TIMEOUT_S,
        )
        if found.error is not None:
            raise KafkaConnectorError(f"{self._what()}: reading group {group!r}: {found.error}")
        if found.offset < 0:
            return None
        metadata = found.metadata or ""
        if metadata != f"{_METADATA}{found.offset}":
            raise KafkaConnectorError(
                f"{self._what()}: group {group!r} holds offset {found.offset} with metadata "
                f"{metadata!r}, not a strom checkpoint record: the group is used by something "
                "else; give the sink another transactional_id"
            )
        return int(found.offset)

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()

    def _consumer(self, group: str) -> Consumer:
        """A consumer of ``group`` that never subscribes: for its group metadata (generation
        -1: a standalone group) and its committed offsets."""
        consumer = self._consumers.get(group)
        if consumer is None:
            defaults = {"group.id": group, "enable.auto.commit": False,
                        "isolation.level": "read_committed", **NO_REBOOTSTRAP}  # fmt: skip
            errors = ClientErrors(f"{self._what()} group {group!r}")
            config = client_config(
                self.bootstrap_servers, "strom-kafka-sink", errors, defaults, None
            )
            consumer = Consumer(config)
            self._consumers[group] = consumer
        return consumer

    def _what(self) -> str:
        return f"KafkaSink({self.topic!r}, transactional_id={self.transactional_id!r})"

    def _call(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, retried while librdkafka says the error is retriable (a broker
        restarting), at most :data:`TXN_TIMEOUT_S`; any other error raised, explained."""
        deadline = time.monotonic() + TXN_TIMEOUT_S
        while True:
            try:
                return call(*args)
            except KafkaException as exc:
                error = exc.args[0]
                if not isinstance(error, KafkaError):
                    raise
                if error.code() in FENCED_CODES or (
                    self._errors.fatal is not None and self._errors.fatal.code() in FENCED_CODES
                ):
                    self.fenced = True
                    raise fenced_error(self._what(), self.transactional_id) from exc
                if error.retriable() and not error.fatal() and time.monotonic() < deadline:
                    log.info("%s: %s failed (%s); retrying", self._what(), what, error.str())
                    time.sleep(0.1)
                    continue
                if error.txn_requires_abort():
                    self._abort_after(error)
                raise KafkaConnectorError(f"{self._what()}: cannot {what}: {error.str()}") from exc

    def _abort_after(self, error: KafkaError) -> None:
        """Abort after an abortable error (the caller raises; the checkpoint fails)."""
        self.open = False
        try:
            self.producer.abort_transaction(TXN_TIMEOUT_S)
        except KafkaException:
            log.warning("%s: aborting after %s failed too", self._what(), error.str())


class KafkaFencedError(KafkaConnectorError, FencedError):
    """Another producer initialized this sink's transactional id: this process is a zombie."""


def fenced_error(what: str, transactional_id: str) -> KafkaFencedError:
    """The error of a producer that another one with its transactional id has fenced."""
    return KafkaFencedError(
        f"{what}: fenced: another process initialized transactional id {transactional_id!r} "
        "(a newer instance of this pipeline took over); this one's open transaction was aborted "
        "and it must stop"
    )
