"""The Kafka transactions of exactly-once writers: a :class:`~strom.connectors.kafka.sink.KafkaSink`
and, in a multi-worker run, a worker's repartition writers.

One :class:`SinkTransactions` per transactional id and process (a :class:`TransactionScope`
hands it to the writers sharing it): its transactional producer, one transaction per
checkpoint, and the checkpoint record that makes the transaction the checkpoint's decision.
A single-process run's exactly-once KafkaSink has its own; a worker of a multi-worker run has one
for all its writers on the repartition topics' cluster (its repartition writers and its
exactly-once KafkaSinks there), so that each of its checkpoints is one transaction.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

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
    "TransactionScope",
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
    """A transactional producer and its checkpoint record, shared by the Kafka writers of one
    process (an exactly-once :class:`~strom.connectors.kafka.sink.KafkaSink`; in a multi-worker
    run, also the worker's repartition writers): one transaction per checkpoint holds every
    record they write between two checkpoints (see the module doc).

    Writers produce through :meth:`produce`. Records produced after :meth:`pre_commit` of
    checkpoint ``c`` and before its :meth:`commit` belong to the next checkpoint: they are held
    in memory (in order) and produced once ``c``'s transaction has committed. ``pre_commit``,
    ``commit`` and ``abort`` may be called by each writer sharing the transaction: the first
    call for a checkpoint acts, the others find it done.

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
        self.staged: int | None = None  # the checkpoint pre-committed into the open transaction
        self.committed: int | None = None  # the last checkpoint whose transaction committed
        self._held: list[_Record] = []
        self._call("initialize the transactional producer", self.producer.init_transactions)
        self._ensure_topic()

    def begin(self) -> None:
        if not self.open:
            self._call("begin a transaction", self.producer.begin_transaction)
            self.open = True

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Produce one record into the open transaction (begun if none is), or hold it for the
        next one while a pre-committed checkpoint awaits its commit."""
        record = _Record(topic, value, key, partition, headers, on_delivery)
        if self.staged is not None:
            self._held.append(record)
            return
        self.begin()
        self._produce(record)

    def pre_commit(
        self, checkpoint_id: int, offsets: Sequence[tuple[str, list[TopicPartition]]] = ()
    ) -> None:
        """Flush every record into the open transaction and add checkpoint ``checkpoint_id``'s
        record and ``offsets`` (per consumer group) to it. Called again for the same checkpoint
        (another writer sharing it), it flushes and adds ``offsets`` only."""
        self.flush()
        if self.staged is not None and self.staged != checkpoint_id:
            raise RuntimeError(
                f"{self._what()}.pre_commit({checkpoint_id}): checkpoint {self.staged} is not "
                "committed yet (one checkpoint at a time)"
            )
        self.begin()
        if self.staged is None:
            self.send_checkpoint(checkpoint_id)
            self.staged = checkpoint_id
        for group, partitions in offsets:
            self.send_offsets(group, partitions)

    def flush(self) -> None:
        """Wait until every record produced is acknowledged (30 s at most, then raise)."""
        remaining = self.producer.flush(TXN_TIMEOUT_S)
        if remaining:
            raise KafkaConnectorError(
                f"{self._what()}: {remaining} record(s) not acknowledged within "
                f"{TXN_TIMEOUT_S:.0f} s by {self.bootstrap_servers} ({self._errors.describe()})"
            )
        if self.fenced:
            raise fenced_error(self._what(), self.transactional_id)

    def commit_checkpoint(self, checkpoint_id: int) -> None:
        """Commit checkpoint ``checkpoint_id``'s transaction (again for the last committed
        one: nothing to do), then produce the records held meanwhile into the next one."""
        if checkpoint_id == self.committed:
            return
        if self.staged != checkpoint_id:
            raise RuntimeError(
                f"{self._what()}.commit({checkpoint_id}): that checkpoint was not "
                f"pre-committed (the open transaction is of {self.staged})"
            )
        try:
            self.commit()
        finally:  # committed, or failed: the run fails and recovers; nothing is held either way
            self.staged = None
        self.committed = checkpoint_id
        held, self._held = self._held, []
        if held:
            self.begin()
            for record in held:
                self._produce(record)

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
        initialization aborted it already); records held for the next one are dropped."""
        self.staged = None
        self._held = []
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
            self.committed = None
            return None
        metadata = found.metadata or ""
        if metadata != f"{_METADATA}{found.offset}":
            raise KafkaConnectorError(
                f"{self._what()}: group {group!r} holds offset {found.offset} with metadata "
                f"{metadata!r}, not a strom checkpoint record: the group is used by something "
                "else; give the sink another transactional_id"
            )
        self.committed = int(found.offset)
        return self.committed

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()

    def _produce(self, record: _Record) -> None:
        while True:
            try:
                self.producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    partition=-1 if record.partition is None else record.partition,
                    headers=record.headers,
                    on_delivery=record.on_delivery,
                )
                break
            except BufferError:  # the local queue is full: serve deliveries, then retry
                self.producer.poll(0.05)
            except KafkaException as exc:  # a fatal error of the producer
                if self.fenced or self._fatal_fenced():
                    self.fenced = True
                    raise fenced_error(self._what(), self.transactional_id) from exc
                raise KafkaConnectorError(f"{self._what()}: cannot produce: {exc}") from exc
        self.producer.poll(0)

    def _ensure_topic(self) -> None:
        """The checkpoint record is an offset of ``topic``'s partition 0, which a broker only
        takes for an existing topic: ask for its metadata now (a cluster that creates topics
        on first use creates it), rather than fail the first checkpoint if it comes before
        the first record."""
        try:
            metadata = self.producer.list_topics(self.topic, timeout=CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaConnectorError(f"{self._what()}: cannot read metadata: {exc}") from exc
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            reason = "missing" if found is None or found.error is None else found.error.str()
            raise KafkaConnectorError(
                f"{self._what()}: topic {self.topic!r} does not exist at "
                f"{self.bootstrap_servers} and was not created on first use ({reason}): create "
                "it first (strom topics create, or your cluster's tooling)"
            )

    def raise_if_fatal(self) -> None:
        """Raise if the producer is fenced or failed fatally."""
        if self.fenced or self._fatal_fenced():
            self.fenced = True
            raise fenced_error(self._what(), self.transactional_id)
        self._errors.raise_if_fatal()

    def _fatal_fenced(self) -> bool:
        fatal = self._errors.fatal
        return fatal is not None and fatal.code() in FENCED_CODES

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
        return f"Kafka transactions of {self.transactional_id!r} (topic {self.topic!r})"

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
                if error.code() in FENCED_CODES or self._fatal_fenced():
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
        self.staged = None
        self._held = []
        try:
            self.producer.abort_transaction(TXN_TIMEOUT_S)
        except KafkaException:
            log.warning("%s: aborting after %s failed too", self._what(), error.str())


@dataclass(frozen=True)
class _Record:
    topic: str
    value: bytes | None
    key: bytes | None
    partition: int | None
    headers: list[tuple[str, str | bytes | None]] | None
    on_delivery: Callable[[KafkaError | None, Message], None] | None


class TransactionScope:
    """Where the writers of one process find their shared :class:`SinkTransactions`: the
    first writer to :meth:`acquire` it initializes the producer (fencing earlier processes
    with the transactional id), the last to :meth:`release` it aborts what is still open and
    closes it. ``topic`` (existing; partition 0 used) carries the checkpoint record.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        transactional_id: str,
        *,
        topic: str,
        transaction_timeout_ms: int = 60_000,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.transactional_id = transactional_id
        self.topic = topic
        self.transaction_timeout_ms = transaction_timeout_ms
        self.producer_config = dict(producer_config or {})
        self._txn: SinkTransactions | None = None
        self._users = 0

    def adopt(self, transaction_timeout_ms: int, producer_config: Mapping[str, Any]) -> None:
        """A writer joining before the first :meth:`acquire` brings its settings: the longer
        transaction timeout, and its producer configuration on top."""
        if self._txn is not None:
            raise RuntimeError(f"{self.transactional_id!r}: joined after it was opened")
        self.transaction_timeout_ms = max(self.transaction_timeout_ms, transaction_timeout_ms)
        self.producer_config.update(producer_config)

    def acquire(self) -> SinkTransactions:
        if self._txn is None:
            errors = ClientErrors(f"transactional producer {self.transactional_id!r}")
            defaults: dict[str, Any] = {
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 1,
                "socket.nagle.disable": True,
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": self.transaction_timeout_ms,
                **NO_REBOOTSTRAP,
            }
            config = client_config(
                self.bootstrap_servers, "strom-kafka-sink", errors, defaults, self.producer_config
            )
            self._txn = SinkTransactions(
                config,
                bootstrap_servers=self.bootstrap_servers,
                topic=self.topic,
                transactional_id=self.transactional_id,
                errors=errors,
            )
        self._users += 1
        return self._txn

    def release(self) -> None:
        """One writer is done; the last one aborts a transaction still open (no checkpoint
        took its records: the run failed or stopped after its final checkpoint) and closes."""
        self._users -= 1
        txn = self._txn
        if self._users > 0 or txn is None:
            return
        self._txn = None
        try:
            txn.abort()
        finally:
            txn.close()


class KafkaFencedError(KafkaConnectorError, FencedError):
    """Another producer initialized this sink's transactional id: this process is a zombie."""


def fenced_error(what: str, transactional_id: str) -> KafkaFencedError:
    """The error of a producer that another one with its transactional id has fenced."""
    return KafkaFencedError(
        f"{what}: fenced: another process initialized transactional id {transactional_id!r} "
        "(a newer instance of this pipeline took over), or the broker aborted a transaction "
        "open longer than its transaction timeout (a checkpoint interval or a checkpoint write "
        "too long for it); this one's open transaction was aborted and it must stop"
    )
