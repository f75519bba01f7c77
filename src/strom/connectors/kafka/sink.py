"""KafkaSink: result batches as records of a Kafka topic."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import polars as pl
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from strom.connectors.kafka.common import ClientErrors, KafkaConnectorError, client_config
from strom.connectors.kafka.json_values import json_values
from strom.connectors.kafka.source import KafkaSource
from strom.connectors.kafka.transaction import SinkTransactions, TransactionScope
from strom.engine.contracts import Guarantee, Metrics, Position, Source, int_field

__all__ = ["KafkaSink"]

log = logging.getLogger("strom.connectors")

#: How long ``close()`` waits for outstanding deliveries before it gives up and raises.
FLUSH_TIMEOUT_S = 30.0


class KafkaSink:
    """Writes every row of every batch as one record of ``topic``.

    With ``value_format="json"`` the value is the whole row as a JSON object, as Polars writes
    it (:mod:`strom.connectors.kafka.json_values`): Datetime and Date become strings, NaN
    becomes null, and Binary columns become base64 strings (JSON has no bytes). With ``"raw"``
    the row's ``value`` column (Binary or String) is the value as-is; a null is a tombstone.
    ``key`` names a column whose value is the record key (Binary as-is, anything else as its
    UTF-8 text; null for no key); the key column stays in the value. Records with a key go to
    the partition the key hashes to (librdkafka's default partitioner), so one key's records
    stay in order.

    **Latency.** Records go to the wire within about 1 ms of their :meth:`write`
    (``linger.ms=1``, Nagle off; ``producer_config`` overrides either), so a micro-batch
    travels as one request per partition without waiting for more.

    **Delivery guarantee: at-least-once** (the default, ``guarantee="at-least-once"``). The
    producer is idempotent with ``acks=all``, so retries inside one run neither duplicate nor
    reorder records. :meth:`pre_commit` (each checkpoint) and :meth:`close` wait until the
    cluster has acknowledged every record, and raise :class:`KafkaConnectorError` if any record
    failed or is still outstanding after 30 s; a write raises as soon as an earlier failure is
    known. Nothing is resumed after a crash: records still in the producer's queue are lost with
    the process (a checkpoint is only taken once they are acknowledged), and the records a
    replaying pipeline emits again are written again (duplicates).

    **Exactly-once** (``guarantee="exactly-once"``, in a run with checkpoints: ``strom run
    --checkpoint-dir``, ``run_streaming(..., checkpoint_dir=...)``): the records written between
    two checkpoints form one Kafka transaction of the transactional id ``transactional_id``.
    ``pre_commit(c)`` flushes them into it and adds checkpoint ``c``'s record (see
    :mod:`strom.connectors.kafka.transaction`) and the offsets of every ``KafkaSource`` of the
    run that has a ``group_id`` and the same ``bootstrap_servers`` (its positions in ``c``, so
    ``strom groups`` shows the pipeline's committed lag); ``commit(c)`` commits the transaction
    (EndTxn), and that commit *is* checkpoint ``c``'s decision: the sink is the run's
    :class:`~strom.engine.contracts.CommitDecider`, and a restarted run resumes from the
    checkpoint its transactions last committed. A consumer reading with
    ``isolation.level=read_committed`` therefore sees every record the pipeline emits exactly
    once, in the order emitted per partition, whatever crashes (of the run or the broker) and
    restarts happen; a read_uncommitted consumer also sees the records of aborted transactions.
    Records become visible at each checkpoint, not at each write (latency = the checkpoint
    interval); those written while a checkpoint's files are being written (between its
    ``pre_commit`` and ``commit``) are held in memory and go into the next transaction.
    ``open()`` initializes the producer, which fences any earlier process with the same
    transactional id (its later writes and commits fail, fenced) and aborts the transaction it
    left open. A write before the run's recovery (a run without checkpoints) is
    refused. One exactly-once sink per run (two decisions would not be one atomic one: a
    second is refused when the run starts).

    ``transactional_id`` (required with exactly-once) must be stable across restarts of the same
    pipeline and unique per pipeline and sink, like a Kafka Streams ``application.id`` plus a
    sink name (``"orders-enricher.alerts"``): a restart with another id cannot fence its
    predecessor or find its committed checkpoint, and two pipelines sharing one fence each
    other. ``transaction_timeout_ms`` must exceed the checkpoint interval (the broker aborts a
    transaction open longer; that run then fails, and restarts from its last checkpoint).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        key: str | None = None,
        value_format: Literal["json", "raw"] = "json",
        producer_config: Mapping[str, Any] | None = None,
        guarantee: Guarantee = "at-least-once",
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
    ) -> None:
        if value_format not in ("json", "raw"):
            raise ValueError(f"value_format must be 'json' or 'raw', not {value_format!r}")
        if guarantee not in ("at-least-once", "exactly-once"):
            raise ValueError(
                f"guarantee must be 'at-least-once' or 'exactly-once', not {guarantee!r}"
            )
        if guarantee == "exactly-once" and not transactional_id:
            raise ValueError(
                "KafkaSink(guarantee='exactly-once') needs transactional_id=...: a name stable "
                "across restarts of this pipeline and unique per pipeline and sink (e.g. "
                "'orders-enricher.alerts'), so a restart fences its predecessor"
            )
        if guarantee == "at-least-once" and transactional_id is not None:
            raise ValueError("transactional_id is for guarantee='exactly-once' only")
        if transaction_timeout_ms < 1_000:
            raise ValueError(
                f"transaction_timeout_ms must be >= 1000, not {transaction_timeout_ms}"
            )
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.key = key
        self.value_format = value_format
        self.guarantee: Guarantee = guarantee
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.produced = 0
        self.failed = 0
        self._acknowledged = 0  # exactly-once: counted by the delivery callback
        self._unacknowledged = 0  # at-least-once: still queued when close() gave up waiting
        self._config = dict(producer_config or {})
        self._errors = ClientErrors(f"KafkaSink({topic!r})")
        self._first_failure: str | None = None
        self._producer: Producer | None = None
        self._closed = False
        self._base_id = transactional_id
        #: exactly-once: the last checkpoint this sink's transaction committed in this process
        self.last_committed: int | None = None
        self._scope: TransactionScope | None = None  # exactly-once: where the transaction is
        self._txn: SinkTransactions | None = None
        self._recovered = False
        self._positions: list[tuple[KafkaSource, Mapping[int, Position]]] = []

    def set_worker(self, index: int) -> None:
        """Exactly-once in worker ``index`` of a multi-worker run: the transactional id gets
        the worker's suffix (``<id>-w<index>``), unless the sink joins the worker's own
        transaction (:meth:`share_transaction`)."""
        if self._base_id is not None:
            self.transactional_id = f"{self._base_id}-w{index}"

    def share_transaction(self, scope: TransactionScope) -> None:
        """Exactly-once: write into ``scope``'s transaction (a worker's, shared with its
        repartition writers on this sink's cluster) instead of one of its own; before open."""
        if self.guarantee == "exactly-once":
            scope.adopt(self.transaction_timeout_ms, self._config)
            self._scope = scope
            self.transactional_id = scope.transactional_id

    def decision(self) -> object:
        """What decides this sink's checkpoints: its transaction's scope (writers sharing one
        transaction are one decision)."""
        return self._scope if self._scope is not None else self

    def open(self) -> None:
        if self.transactional_id is None:
            defaults: dict[str, Any] = {
                "acks": "all",
                "enable.idempotence": True,
                # A write hands a whole micro-batch over in one burst, so the records of a
                # batch meet within a millisecond: a longer linger would only delay them
                # (librdkafka's 5 ms default is most of the latency budget), a shorter one
                # splits them into requests.
                "linger.ms": 1,
                "socket.nagle.disable": True,  # a small request must not wait for the last's ACK
                # a delivery report (a Python callback) for failures only: ~1.3 us a record
                # saved; the acknowledged count is what left the queue (see ``delivered``)
                "delivery.report.only.error": True,
            }
            config = client_config(
                self.bootstrap_servers, "strom-kafka-sink", self._errors, defaults, self._config
            )
            self._producer = Producer(config)
            return
        if self._scope is None:  # the same producer settings, in a transaction of its own
            self._scope = TransactionScope(
                self.bootstrap_servers,
                self.transactional_id,
                topic=self.topic,
                transaction_timeout_ms=self.transaction_timeout_ms,
                producer_config=self._config,
            )
        self._txn = self._scope.acquire()
        self._producer = self._txn.producer

    # -- exactly-once: the checkpoint's two phases ---------------------------------------------

    def committed_checkpoint(self) -> int | None:
        """The last checkpoint whose transaction committed (exactly-once; read back from the
        checkpoint record after ``open()`` fenced earlier processes)."""
        if self._txn is None:
            raise RuntimeError("KafkaSink.committed_checkpoint(): exactly-once, after open()")
        return self._txn.committed_checkpoint()

    def recover(self, checkpoint_id: int | None) -> None:
        """Nothing to publish or discard: ``open()`` aborted what an earlier process left open,
        and the transactions of checkpoints up to ``checkpoint_id`` are committed already."""
        self._recovered = True

    def stage_positions(
        self, checkpoint_id: int, positions: Sequence[tuple[Source, Mapping[int, Position]]]
    ) -> None:
        """Keep the positions of each ``KafkaSource`` with a ``group_id`` on this sink's
        cluster, to commit with checkpoint ``checkpoint_id``'s transaction."""
        self._positions = [
            (source, ps)
            for source, ps in positions
            if isinstance(source, KafkaSource)
            and source.group_id is not None
            and source.bootstrap_servers == self.bootstrap_servers
        ]

    def write(self, batch: pl.DataFrame) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaSink.write() before open()")
        self._raise_if_failed()
        txn = self._txn
        if txn is not None and not self._recovered:
            raise RuntimeError(
                f"KafkaSink({self.topic!r}, guarantee='exactly-once') writes only in a run "
                "with checkpoints (strom run --checkpoint-dir, run_streaming(..., "
                "checkpoint_dir=...)): its transactions commit with them"
            )
        values = self._values(batch)
        keys = self._keys(batch) if self.key is not None else [None] * batch.height
        if txn is not None:
            self.produced += batch.height
            for value, key in zip(values, keys, strict=True):
                txn.produce(self.topic, value, key=key, on_delivery=self._on_delivery)
            return
        for value, key in zip(values, keys, strict=True):
            while True:
                try:
                    producer.produce(
                        self.topic, value=value, key=key, on_delivery=self._on_delivery
                    )
                    break
                except BufferError:  # the local queue is full: serve deliveries, then retry
                    producer.poll(0.1)
                except KafkaException as exc:  # a fatal error of the producer
                    raise KafkaConnectorError(
                        f"KafkaSink({self.topic!r}): cannot produce: {exc}"
                    ) from exc
            self.produced += 1  # queued (``delivered`` counts on it)
        producer.poll(0)

    def pre_commit(self, checkpoint_id: int) -> None:
        """Wait until every record written so far is acknowledged; raise if any was not.
        After :meth:`close` there is nothing to wait for: close returned only once every
        record was acknowledged. Exactly-once: the records are then in the open transaction,
        with checkpoint ``checkpoint_id``'s record and the sources' offsets."""
        if self._producer is None:
            if self._closed:
                return
            raise RuntimeError("KafkaSink.pre_commit() before open()")
        txn = self._txn
        if txn is None:
            self._flush(self._producer)
            return
        offsets = []
        for source, positions in self._positions:
            assert source.group_id is not None
            partitions = [
                TopicPartition(source.topic, p, int_field(pos, "offset", f"{source.topic}[{p}]"))
                for p, pos in sorted(positions.items())
            ]
            offsets.append((source.group_id, partitions))
        txn.pre_commit(checkpoint_id, offsets)
        self._raise_if_failed()

    def commit(self, checkpoint_id: int) -> None:
        """Exactly-once: commit checkpoint ``checkpoint_id``'s transaction (the checkpoint's
        decision; again for the last committed checkpoint, nothing to do)."""
        if self._txn is not None:
            self._txn.commit_checkpoint(checkpoint_id)
            self.last_committed = self._txn.committed

    def abort(self, checkpoint_id: int) -> None:
        """Exactly-once: abort the open transaction (every record since the last committed
        checkpoint is discarded). At-least-once: nothing can be taken back."""
        if self._txn is not None:
            self._txn.abort()

    def close(self) -> None:
        """Wait for every record to be acknowledged; raise if any was not (idempotent).
        Exactly-once: a transaction still open (no checkpoint took its records: the run
        failed) is aborted."""
        producer, self._producer = self._producer, None
        txn, self._txn = self._txn, None
        if txn is not None:
            self._closed = True
            assert self._scope is not None
            self._scope.release()
        elif producer is not None:
            self._closed = True
            self._flush(producer)

    @property
    def delivered(self) -> int:
        """Records the cluster has acknowledged so far. At-least-once: those queued that
        neither failed nor are still in the producer's queue (exact once :meth:`pre_commit` or
        :meth:`close` returned; the queue's length also counts the client's own events, so a
        little low before); exactly-once: counted one by one as their reports come."""
        if self.transactional_id is not None:
            return self._acknowledged
        producer = self._producer
        pending = len(producer) if producer is not None else self._unacknowledged
        return max(0, self.produced - self.failed - pending)

    def metrics(self) -> Metrics:
        """Rows produced (``rows_in``) and acknowledged (``rows_out``); ``detail["failed"]``."""
        return Metrics(
            rows_in=self.produced,
            rows_out=self.delivered,
            label=f"KafkaSink({self.topic!r})",
            detail={"failed": self.failed},
        )

    def _flush(self, producer: Producer) -> None:
        remaining = producer.flush(FLUSH_TIMEOUT_S)
        self._unacknowledged = remaining  # what close() left unacknowledged, if it gave up
        if remaining:
            raise KafkaConnectorError(
                f"KafkaSink({self.topic!r}): {remaining} record(s) not acknowledged within "
                f"{FLUSH_TIMEOUT_S:.0f} s by {self.bootstrap_servers} ({self._errors.describe()})"
            )
        self._raise_if_failed()

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self._acknowledged += 1
            return
        self.failed += 1
        if self._first_failure is None:
            self._first_failure = str(error.str())

    def _raise_if_failed(self) -> None:
        if self._txn is not None:
            self._txn.raise_if_fatal()
        self._errors.raise_if_fatal()
        if self.failed:
            raise KafkaConnectorError(
                f"KafkaSink({self.topic!r}): {self.failed} record(s) failed; first: "
                f"{self._first_failure}"
            )

    def _values(self, batch: pl.DataFrame) -> Sequence[bytes | None]:
        if self.value_format == "raw":
            if "value" not in batch.columns:
                raise ValueError("KafkaSink(value_format='raw') needs a 'value' column")
            return _as_bytes(batch.get_column("value"))
        for name, dtype in batch.schema.items():
            if dtype.is_nested() and _contains_binary(dtype):
                raise NotImplementedError(
                    f"KafkaSink cannot write column {name!r} ({dtype}) as JSON: Binary inside "
                    "lists or structs is not supported; encode it first"
                )
        binary = [n for n, t in batch.schema.items() if t == pl.Binary]
        if binary:
            batch = batch.with_columns(pl.col(binary).bin.encode("base64"))
        return json_values(batch)

    def _keys(self, batch: pl.DataFrame) -> list[bytes | None]:
        assert self.key is not None
        if self.key not in batch.columns:
            raise ValueError(f"key column {self.key!r} is not in the batch {batch.columns}")
        return _as_bytes(batch.get_column(self.key))


def _as_bytes(column: pl.Series) -> list[bytes | None]:
    """Binary values as-is, anything else as UTF-8 text (null stays null)."""
    if column.dtype == pl.Binary:
        return list(column.to_list())
    if column.dtype != pl.String:
        column = column.cast(pl.String)
    return list(column.cast(pl.Binary).to_list())


def _contains_binary(dtype: object) -> bool:
    if dtype == pl.Binary:
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _contains_binary(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(_contains_binary(f.dtype) for f in dtype.fields)
    return False
