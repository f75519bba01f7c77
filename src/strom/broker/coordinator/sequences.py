"""Idempotent-producer sequence checks per (producer id, topic, partition).

For each producer and partition the tracker keeps the producer epoch and the sequence ranges of
its last five appended batches with the offsets they were given (Kafka's retained window: a
producer has at most five batches in flight). A new batch is:

* a **duplicate** when its epoch is current and its (first, last) sequence equals a retained
  batch's: the produce must be answered with success and that batch's base offset, without
  appending (how Kafka answers a retried batch);
* **fenced** (INVALID_PRODUCER_EPOCH) when its epoch is older than the current one;
* **out of order** (OUT_OF_ORDER_SEQUENCE_NUMBER) when its epoch is current and its first
  sequence is not the last one plus one (sequences wrap from 2**31-1 to 0), or its epoch is newer
  and its first sequence is not 0;
* otherwise **accepted**.

A producer the tracker has no state for is accepted with any sequence, as Kafka does once a
producer's state is gone. The state is in memory; on start the broker rebuilds it from each
partition's newest batches (``strom.broker.state``), so a batch retried across a restart is
still found as a duplicate. Known gap: producers whose last batches lie further back than the
active segment and the tail of the previous one are not restored (Kafka keeps producer-state
snapshots). Idle producers are forgotten after ``producer_expiration_ms``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from strom.broker.coordinator import errors
from strom.broker.coordinator.clock import Clock, monotonic_ms

__all__ = ["BatchLike", "SequenceTracker", "SequenceVerdict", "last_sequence"]

MAX_SEQUENCE = 2**31 - 1
RETAINED_BATCHES = 5


class BatchLike(Protocol):
    """The record-batch header fields the tracker reads (``protocol.records.BatchHeader``)."""

    @property
    def producer_id(self) -> int: ...
    @property
    def producer_epoch(self) -> int: ...
    @property
    def base_sequence(self) -> int: ...
    @property
    def last_offset_delta(self) -> int: ...


class SequenceVerdict(NamedTuple):
    """``error_code`` NONE and ``duplicate_offset`` None: append. NONE with an offset: answer
    success with that base offset and do not append. Otherwise reject with ``error_code``."""

    error_code: int
    duplicate_offset: int | None = None
    message: str | None = None


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    """The sequence of a batch's last record, wrapping past 2**31-1 to 0."""
    return (base_sequence + last_offset_delta) % (MAX_SEQUENCE + 1)


def _next_sequence(seq: int) -> int:
    return 0 if seq == MAX_SEQUENCE else seq + 1


class _Batch(NamedTuple):
    first: int
    last: int
    base_offset: int | None  # None while only tentatively accepted within one request


@dataclass
class _Entry:
    epoch: int
    batches: deque[_Batch] = field(default_factory=lambda: deque(maxlen=RETAINED_BATCHES))
    last_seen_ms: int = 0


_Key = tuple[int, str, int]
_ACCEPT = SequenceVerdict(errors.NONE)


def _verdict(entry: _Entry | None, epoch: int, first: int, last: int) -> SequenceVerdict:
    if entry is None:
        return _ACCEPT
    if epoch == entry.epoch:
        for batch in entry.batches:
            if batch.first == first and batch.last == last and batch.base_offset is not None:
                return SequenceVerdict(errors.NONE, batch.base_offset)
    if epoch < entry.epoch:
        return SequenceVerdict(
            errors.INVALID_PRODUCER_EPOCH,
            message=f"producer epoch {epoch} is older than the current {entry.epoch}",
        )
    if epoch > entry.epoch:
        if first != 0:
            return SequenceVerdict(
                errors.OUT_OF_ORDER_SEQUENCE_NUMBER,
                message=f"new epoch {epoch} must start at sequence 0, not {first}",
            )
        return _ACCEPT
    expected = _next_sequence(entry.batches[-1].last)
    if first != expected:
        return SequenceVerdict(
            errors.OUT_OF_ORDER_SEQUENCE_NUMBER,
            message=f"expected sequence {expected}, got {first}",
        )
    return _ACCEPT


class SequenceTracker:
    """See the module docstring. Pure in-memory logic; one event loop owns it."""

    def __init__(
        self, *, clock: Clock = monotonic_ms, producer_expiration_ms: int = 86_400_000
    ) -> None:
        self._entries: dict[_Key, _Entry] = {}
        self._clock = clock
        self._expiration_ms = producer_expiration_ms
        self._last_sweep_ms = clock()

    def check_batch(
        self,
        topic: str,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        first_sequence: int,
        last_sequence: int,
    ) -> SequenceVerdict:
        """Judge one batch against the stored state (see the module docstring)."""
        if producer_id < 0:
            return _ACCEPT
        entry = self._entries.get((producer_id, topic, partition))
        return _verdict(entry, producer_epoch, first_sequence, last_sequence)

    def record_batch(
        self,
        topic: str,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        first_sequence: int,
        last_sequence: int,
        base_offset: int,
    ) -> None:
        """Remember an appended batch (call only after :meth:`check_batch` accepted it)."""
        if producer_id < 0:
            return
        now = self._clock()
        key = (producer_id, topic, partition)
        entry = self._entries.get(key)
        if entry is None or producer_epoch != entry.epoch:
            entry = self._entries[key] = _Entry(producer_epoch)
        entry.batches.append(_Batch(first_sequence, last_sequence, base_offset))
        entry.last_seen_ms = now
        if now - self._last_sweep_ms >= self._expiration_ms:
            self.expire_idle(now)

    def check(self, topic: str, partition: int, headers: Sequence[BatchLike]) -> SequenceVerdict:
        """Judge all batches of one produce request for a partition, in order.

        The first rejected batch rejects the request; if any batch is a duplicate, the whole
        request is answered as that duplicate (Kafka does the same).
        """
        scratch: dict[int, _Entry | None] = {}
        for h in headers:
            if h.producer_id < 0:
                continue
            if h.producer_id not in scratch:
                stored = self._entries.get((h.producer_id, topic, partition))
                scratch[h.producer_id] = (
                    None if stored is None else _Entry(stored.epoch, deque(stored.batches))
                )
            entry = scratch[h.producer_id]
            last = last_sequence(h.base_sequence, h.last_offset_delta)
            verdict = _verdict(entry, h.producer_epoch, h.base_sequence, last)
            if verdict != _ACCEPT:
                return verdict
            if entry is None or h.producer_epoch != entry.epoch:
                entry = scratch[h.producer_id] = _Entry(h.producer_epoch)
            entry.batches.append(_Batch(h.base_sequence, last, None))
        return _ACCEPT

    def record(
        self, topic: str, partition: int, headers: Sequence[BatchLike], base_offset: int
    ) -> None:
        """Remember the batches of an accepted request appended contiguously at ``base_offset``."""
        offset = base_offset
        for h in headers:
            last = last_sequence(h.base_sequence, h.last_offset_delta)
            self.record_batch(
                topic, partition, h.producer_id, h.producer_epoch, h.base_sequence, last, offset
            )
            offset += h.last_offset_delta + 1

    def forget_topic(self, topic: str) -> None:
        """Drop state for a deleted topic."""
        for key in [k for k in self._entries if k[1] == topic]:
            del self._entries[key]

    def expire_idle(self, now_ms: int | None = None) -> int:
        """Forget producers idle for ``producer_expiration_ms``; returns how many."""
        now = self._clock() if now_ms is None else now_ms
        self._last_sweep_ms = now
        idle = [k for k, e in self._entries.items() if now - e.last_seen_ms >= self._expiration_ms]
        for key in idle:
            del self._entries[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._entries)
