"""The shuffle seam: how a multi-worker run moves rows between its workers.

:mod:`strom.runtime.distributed.plan_split` cuts a plan before every keyed operator and asks a
:class:`Shuffle` for three things: topics (created once per run, with one partition count),
a writer per cut (a sink that routes rows by key and reports the writer's event-time progress)
and a reader per cut (a source of this worker's partitions). :class:`KafkaShuffle` does it with
repartition topics on a Kafka cluster (:mod:`strom.runtime.distributed.repartition`), the Kafka
Streams model. The plan split and the worker loop reach Kafka only through this seam (the admin
calls live here, in :func:`ensure_topics`), so another transport is one more implementation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import polars as pl
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from strom.connectors.kafka.common import (
    CONNECT_TIMEOUT_S,
    ClientErrors,
    KafkaConnectorError,
    client_config,
)
from strom.connectors.kafka.transaction import TransactionScope
from strom.engine.contracts import Sink, Source
from strom.runtime.distributed.repartition import (
    Observer,
    Progress,
    RepartitionSource,
    RepartitionWriter,
)
from strom.runtime.watermarks import WatermarkTracker

__all__ = ["KafkaShuffle", "Shuffle", "ShuffleWriter", "ensure_topics"]


class ShuffleWriter(Sink, Protocol):
    """A cut's writer: a sink routing rows by key, which also carries its writer's progress.

    ``progress(p)`` sends ``p`` to every partition (readers merge all writers' progress into
    their watermark); ``progress_sent`` is the last one sent; ``latest_progress`` is called
    when the writer needs the current one (e.g. at close); ``tracker`` computes it (set by
    the plan split; a writer that is a :class:`~strom.engine.contracts.StatefulSink` keeps
    its state in checkpoints).
    """

    topic: str
    rows_written: int
    records_sent: int
    progress_sent: Progress | None
    latest_progress: Callable[[], Progress] | None
    tracker: WatermarkTracker | None

    def progress(self, progress: Progress) -> None: ...


class Shuffle(Protocol):
    """Moves rows between the workers of one run (see the module docstring)."""

    def ensure_topics(self, topics: Sequence[str], partitions: int) -> int:
        """Create the missing ``topics`` with ``partitions`` partitions; the count they have."""
        ...

    def writer(
        self,
        topic: str,
        keys: Sequence[str],
        partitions: int,
        *,
        writer: int,
        run_id: str,
        transaction: TransactionScope | None = None,
    ) -> ShuffleWriter:
        """``transaction``: exactly-once, the worker's transaction to write in."""
        ...

    def reader(
        self,
        topic: str,
        owned: Sequence[int],
        *,
        writers: int,
        run_id: str,
        schema: pl.Schema | None,
        group_id: str,
        observer: Observer,
    ) -> Source: ...


class KafkaShuffle:
    """Repartition topics on the Kafka cluster at ``bootstrap_servers``."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def ensure_topics(self, topics: Sequence[str], partitions: int) -> int:
        return ensure_topics(self.bootstrap_servers, topics, partitions)

    def writer(
        self,
        topic: str,
        keys: Sequence[str],
        partitions: int,
        *,
        writer: int,
        run_id: str,
        transaction: TransactionScope | None = None,
    ) -> RepartitionWriter:
        return RepartitionWriter(
            self.bootstrap_servers,
            topic,
            keys,
            partitions,
            writer=writer,
            run_id=run_id,
            transaction=transaction,
        )

    def reader(
        self,
        topic: str,
        owned: Sequence[int],
        *,
        writers: int,
        run_id: str,
        schema: pl.Schema | None,
        group_id: str,
        observer: Observer,
    ) -> RepartitionSource:
        return RepartitionSource(
            self.bootstrap_servers,
            topic,
            owned,
            writers=writers,
            run_id=run_id,
            schema=schema,
            group_id=group_id,
            observer=observer,
        )


def ensure_topics(bootstrap_servers: str, topics: Sequence[str], partitions: int) -> int:
    """Create the missing ``topics`` with ``partitions`` partitions; return the count they have
    (every topic must agree, or workers would route keys differently)."""
    errors = ClientErrors("repartition topics")
    admin = AdminClient(client_config(bootstrap_servers, "strom-workers", errors, {}, None))
    new = [NewTopic(t, partitions, 1) for t in topics]
    for topic, future in admin.create_topics(new, request_timeout=CONNECT_TIMEOUT_S).items():
        try:
            future.result(CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another worker made it
                raise KafkaConnectorError(
                    f"cannot create repartition topic {topic!r} at {bootstrap_servers}: {exc}"
                ) from exc
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:  # a new topic may take a moment to appear in every broker's metadata
        metadata = admin.list_topics(timeout=CONNECT_TIMEOUT_S)
        counts = {t: len(metadata.topics[t].partitions) for t in topics if t in metadata.topics}
        if len(counts) == len(topics) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if len(counts) != len(topics) or len(set(counts.values())) != 1:
        raise KafkaConnectorError(
            f"repartition topics {list(topics)} at {bootstrap_servers}: expected every one with "
            f"one partition count, found {counts}"
        )
    return next(iter(counts.values()))
