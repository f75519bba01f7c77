"""KafkaSink: result batches as records of a Kafka topic."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import polars as pl
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from strom.connectors.kafka.common import ClientErrors, KafkaConnectorError, client_config
from strom.connectors.kafka.source import KafkaSource
from strom.connectors.kafka.transaction import (
    FENCED_CODES,
    NO_REBOOTSTRAP,
    SinkTransactions,
    fenced_error,
)
from strom.engine.contracts import Guarantee, Metrics, Position, Source, int_field

__all__ = ["KafkaSink"]

log = logging.getLogger("strom.connectors")

#: How long ``close()`` waits for outstanding deliveries before it gives up and raises.
FLUSH_TIMEOUT_S = 30.0


class KafkaSink:
    """Writes every row of every batch as one record of ``topic``.

    With ``value_format="json"`` the value is the whole row as a JSON object, serialized in bulk
    by Polars (``write_ndjson``): Datetime and Date become strings, NaN becomes null, and Binary
    columns become base64 strings (JSON has no bytes). With ``"raw"`` the row's ``value`` column
    (Binary or String) is the value as-is; a null is a tombstone. ``key`` names a column whose
    value is the record key (Binary as-is, anything else as its UTF-8 text; null for no key);
    the key column stays in the value. Records with a key go to the partition the key hashes to
    (librdkafka's default partitioner), so one key's records stay in order.

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
        self.delivered = 0
        self.failed = 0
        self._config = dict(producer_config or {})
        self._errors = ClientErrors(f"KafkaSink({topic!r})")
        self._first_failure: str | None = None
        self._producer: Producer | None = None
        self._closed = False
        self._txn: SinkTransactions | None = None
        self._recovered = False
        self._positions: list[tuple[KafkaSource, Sequence[Position]]] = []
        self._staged: int | None = None  # the checkpoint pre-committed into the open transaction
        self._committed: int | None = None
        #: records written after ``pre_commit(c)``, before ``commit(c)``: the next checkpoint's
        self._held: list[tuple[bytes | None, bytes | None]] = []

    def open(self) -> None:
        defaults: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": True,
            # A write hands a whole micro-batch over in one burst, so the records of a batch
            # meet within a millisecond: a longer linger would only delay them (librdkafka's 5 ms
            # default is most of the latency budget), a shorter one splits them into requests.
            "linger.ms": 1,
            "socket.nagle.disable": True,  # a small request must not wait for the last's ACK
        }
        if self.transactional_id is not None:
            defaults["transactional.id"] = self.transactional_id
            defaults["transaction.timeout.ms"] = self.transaction_timeout_ms
            defaults.update(NO_REBOOTSTRAP)
        config = client_config(
            self.bootstrap_servers, "strom-kafka-sink", self._errors, defaults, self._config
        )
        if self.transactional_id is None:
            self._producer = Producer(config)
            return
        self._txn = SinkTransactions(
            config,
            bootstrap_servers=self.bootstrap_servers,
            topic=self.topic,
            transactional_id=self.transactional_id,
            errors=self._errors,
        )
        self._producer = self._txn.producer

    # -- exactly-once: the checkpoint's two phases ---------------------------------------------

    def committed_checkpoint(self) -> int | None:
        """The last checkpoint whose transaction committed (exactly-once; read back from the
        checkpoint record after ``open()`` fenced earlier processes)."""
        if self._txn is None:
            raise RuntimeError("KafkaSink.committed_checkpoint(): exactly-once, after open()")
        self._committed = self._txn.committed_checkpoint()
        return self._committed

    def recover(self, checkpoint_id: int | None) -> None:
        """Nothing to publish or discard: ``open()`` aborted what an earlier process left open,
        and the transactions of checkpoints up to ``checkpoint_id`` are committed already."""
        self._recovered = True

    def stage_positions(
        self, checkpoint_id: int, positions: Sequence[tuple[Source, Sequence[Position]]]
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
        if self._txn is not None and not self._recovered:
            raise RuntimeError(
                f"KafkaSink({self.topic!r}, guarantee='exactly-once') writes only in a run "
                "with checkpoints (strom run --checkpoint-dir, run_streaming(..., "
                "checkpoint_dir=...)): its transactions commit with them"
            )
        values = self._values(batch)
        keys = self._keys(batch) if self.key is not None else [None] * batch.height
        self.produced += batch.height
        if self._txn is not None and self._staged is not None:
            # checkpoint ``_staged``'s transaction awaits its commit: these are the next one's
            self._held.extend(zip(values, keys, strict=True))
            return
        self._produce(producer, values, keys)

    def _produce(
        self, producer: Producer, values: Sequence[bytes | None], keys: Sequence[bytes | None]
    ) -> None:
        if self._txn is not None:
            self._txn.begin()
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
                    raise self._produce_error(exc) from exc
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
        self._flush(self._producer)
        txn = self._txn
        if txn is None:
            return
        if self._staged is not None:
            raise RuntimeError(
                f"KafkaSink({self.topic!r}).pre_commit({checkpoint_id}): checkpoint "
                f"{self._staged} is not committed yet (one checkpoint at a time)"
            )
        txn.begin()
        txn.send_checkpoint(checkpoint_id)
        for source, positions in self._positions:
            assert source.group_id is not None
            offsets = [
                TopicPartition(source.topic, p, int_field(pos, "offset", f"{source.topic}[{p}]"))
                for p, pos in enumerate(positions)
            ]
            txn.send_offsets(source.group_id, offsets)
        self._staged = checkpoint_id

    def commit(self, checkpoint_id: int) -> None:
        """Exactly-once: commit checkpoint ``checkpoint_id``'s transaction (the checkpoint's
        decision; again for the last committed checkpoint, nothing to do)."""
        if self._txn is None or checkpoint_id == self._committed:
            return
        if self._staged != checkpoint_id:
            raise RuntimeError(
                f"KafkaSink({self.topic!r}).commit({checkpoint_id}): that checkpoint was not "
                f"pre-committed (the open transaction is of {self._staged})"
            )
        try:
            self._txn.commit()
        finally:  # committed, or failed: the run fails and recovers; nothing is held either way
            self._staged = None
        self._committed = checkpoint_id
        held, self._held = self._held, []
        if held and self._producer is not None:
            self._produce(self._producer, [v for v, _ in held], [k for _, k in held])

    def abort(self, checkpoint_id: int) -> None:
        """Exactly-once: abort the open transaction (every record since the last committed
        checkpoint is discarded). At-least-once: nothing can be taken back."""
        if self._txn is not None:
            self._staged = None
            self._held = []
            self._txn.abort()

    def close(self) -> None:
        """Wait for every record to be acknowledged; raise if any was not (idempotent).
        Exactly-once: a transaction still open (no checkpoint took its records: the run
        failed) is aborted."""
        producer, self._producer = self._producer, None
        txn, self._txn = self._txn, None
        self._held = []
        if txn is not None:
            self._closed = True
            try:
                txn.abort()
            finally:
                txn.close()
        elif producer is not None:
            self._closed = True
            self._flush(producer)

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
        if remaining:
            raise KafkaConnectorError(
                f"KafkaSink({self.topic!r}): {remaining} record(s) not acknowledged within "
                f"{FLUSH_TIMEOUT_S:.0f} s by {self.bootstrap_servers} ({self._errors.describe()})"
            )
        self._raise_if_failed()

    def _produce_error(self, exc: KafkaException) -> KafkaConnectorError:
        if self._txn is not None and self._txn.fenced:
            return fenced_error(f"KafkaSink({self.topic!r})", self._txn.transactional_id)
        return KafkaConnectorError(f"KafkaSink({self.topic!r}): cannot produce: {exc}")

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        if self._first_failure is None:
            self._first_failure = str(error.str())

    def _raise_if_failed(self) -> None:
        if self._txn is not None and self._txn.fenced:
            raise fenced_error(f"KafkaSink({self.topic!r})", self._txn.transactional_id)
        fatal = self._errors.fatal
        if fatal is not None and fatal.code() in FENCED_CODES and self.transactional_id:
            raise fenced_error(f"KafkaSink({self.topic!r})", self.transactional_id)
        self._errors.raise_if_fatal()
        if self.failed:
            raise KafkaConnectorError(
                f"KafkaSink({self.topic!r}): {self.failed} record(s) failed; first: "
                f"{self._first_failure}"
            )

    def _values(self, batch: pl.DataFrame) -> list[bytes | None]:
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
        # one expression, not write_ndjson: the same JSON, without the streaming engine's start
        # (a fixed ~0.3 ms a batch, most of a small batch's cost)
        rows = batch.select(pl.struct(pl.all()).struct.json_encode().cast(pl.Binary))
        return list(rows.to_series().to_list())

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
