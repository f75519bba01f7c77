"""Everything the handlers share: the logs, the group and transaction coordinators, settings."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from strom.broker.config import BrokerConfig
from strom.broker.coordinator import (
    GroupConfig,
    GroupCoordinator,
    GroupStore,
    MarkerWriter,
    OffsetStore,
    ProducerIdManager,
    SequenceTracker,
    TransactionCoordinator,
    TransactionLog,
)
from strom.broker.log import LogManager

__all__ = ["BrokerState", "now_ms"]

log = logging.getLogger("strom.broker")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _cluster_id(data_dir: Path) -> str:
    """A stable cluster id, kept in the data directory like Kafka's meta.properties."""
    path = data_dir / "cluster.id"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = uuid.uuid4().hex[:22]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value, encoding="utf-8")
    tmp.replace(path)
    return value


# How far into the segment before the active one producer state is rebuilt from: the batches
# in flight at a crash are the newest, but a segment roll may have separated them.
_PRODUCER_STATE_TAIL_BYTES = 16 << 20


def _restored_sequences(logs: LogManager) -> SequenceTracker:
    """Idempotent producers' recent batches, rebuilt from the newest batches of each partition.

    A producer that outlives a broker restart retries the batches it had in flight; those the
    old process wrote (acks=all: fsynced) but never acknowledged must be answered as duplicates,
    not appended a second time. Kafka restores this from producer-state snapshots; strom rescans
    the active segment and the tail of the one before (:meth:`PartitionLog.recent_batches`), so
    only a producer whose last batches lie further back is not restored.
    """
    sequences = SequenceTracker()
    for topic, partition, plog in logs.partitions():
        for header in plog.recent_batches(_PRODUCER_STATE_TAIL_BYTES):
            if header.producer_id >= 0 and not header.is_control:
                sequences.record(topic, partition, [header], header.base_offset)
    return sequences


def _marker_writer(logs: LogManager) -> MarkerWriter:
    """How the transaction coordinator writes a commit/abort marker into a partition."""

    def write(
        topic: str, partition: int, pid: int, epoch: int, commit: bool, coordinator_epoch: int
    ) -> None:
        info = logs.topics().get(topic)
        if info is None or not 0 <= partition < info.partitions:
            # Deleted while the transaction was open: there is nothing left to end.
            log.warning("no marker for %s-%d: the partition no longer exists", topic, partition)
            return
        logs.partition(topic, partition).append_marker(
            pid, epoch, commit=commit, coordinator_epoch=coordinator_epoch, now_ms=now_ms()
        )

    return write


@dataclass
class BrokerState:
    config: BrokerConfig
    logs: LogManager
    groups: GroupCoordinator
    offsets: OffsetStore
    producers: ProducerIdManager
    sequences: SequenceTracker
    transactions: TransactionCoordinator
    cluster_id: str
    advertised_host: str
    advertised_port: int
    group_store: GroupStore | None = None
    #: Long-polling fetches by the partitions they read: an append wakes only its readers.
    _waiters: dict[tuple[str, int], set[asyncio.Future[None]]] = field(default_factory=dict)

    @classmethod
    def open(cls, config: BrokerConfig) -> BrokerState:
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        logs = LogManager(data_dir / "logs", config.log)
        flush_always = config.log.flush.always
        offsets = OffsetStore(data_dir / "consumer-offsets.log", flush_always=flush_always)
        group_store = GroupStore(data_dir / "consumer-groups.log", flush_always=flush_always)

        def partition_exists(topic: str, partition: int) -> bool:
            info = logs.topics().get(topic)
            return info is not None and 0 <= partition < info.partitions

        groups = GroupCoordinator(
            offsets=offsets,
            config=GroupConfig(
                initial_rebalance_delay_ms=config.initial_rebalance_delay_ms,
                min_session_timeout_ms=config.min_session_timeout_ms,
            ),
            partition_exists=partition_exists,
            store=group_store,
        )
        producers = ProducerIdManager(data_dir / "producer-ids")
        transactions = TransactionCoordinator(
            TransactionLog(data_dir / "transactions.log", flush_always=flush_always),
            producers,
            write_marker=_marker_writer(logs),
            complete_offsets=lambda group, pid, commit: offsets.complete_pending(
                group, pid, commit=commit
            ),
            partition_exists=partition_exists,
        )
        # Before serving: every transaction decided before a crash is completed as decided.
        transactions.recover()
        state = cls(
            config=config,
            logs=logs,
            groups=groups,
            offsets=offsets,
            producers=producers,
            sequences=_restored_sequences(logs),
            transactions=transactions,
            cluster_id=_cluster_id(data_dir),
            advertised_host=config.advertised_host or config.host,
            advertised_port=config.port,
            group_store=group_store,
        )
        # Any append, a transaction marker included (it moves the last stable offset), wakes
        # the fetches long-polling that partition.
        logs.on_append.append(lambda topic, partition, _: state.notify_append([(topic, partition)]))
        return state

    def close(self) -> None:
        self.transactions.close()
        self.offsets.close()
        if self.group_store is not None:
            self.group_store.close()
        self.logs.close()

    def notify_append(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Wake every fetch long-polling on one of ``partitions`` (``(topic, index)``)."""
        for key in partitions:
            for fut in self._waiters.pop(key, ()):
                if not fut.done():
                    fut.set_result(None)

    async def wait_for_append(
        self, partitions: Collection[tuple[str, int]], timeout_s: float
    ) -> None:
        """Return when one of ``partitions`` is appended to, or after ``timeout_s``."""
        if timeout_s <= 0 or not partitions:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in partitions:
            self._waiters.setdefault(key, set()).add(fut)
        try:
            async with asyncio.timeout(timeout_s):
                await fut
        except TimeoutError:
            pass
        finally:
            for key in partitions:
                waiting = self._waiters.get(key)
                if waiting is not None:
                    waiting.discard(fut)
                    if not waiting:
                        del self._waiters[key]
