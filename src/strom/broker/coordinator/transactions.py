"""The transaction coordinator (KIP-98): producer ids and epochs of transactional ids, and the
life of each transaction from its first partition to its last marker.

States (:class:`TxnState`): ``Empty`` → ``Ongoing`` (AddPartitionsToTxn / AddOffsetsToTxn) →
``PrepareCommit``/``PrepareAbort`` (EndTxn, a timeout, or a new InitProducerId) →
``CompleteCommit``/``CompleteAbort`` → ``Ongoing`` again with the next transaction.

Guarantees:

* **Decide, persist, act.** Every state change is written to the :class:`TransactionLog`
  before the coordinator acts on it or answers. A decision (``Prepare*``) is therefore never
  lost: :meth:`recover`, on start, writes the markers and offsets of every transaction the log
  shows as preparing, and only then logs it complete. Re-writing a marker is harmless, and
  completing a group's transactional offsets twice is a no-op.
* **Markers before completion.** A transaction becomes ``Complete*`` only after a commit or
  abort marker is in every partition it touched and its groups' staged offsets are published
  (commit) or dropped (abort). Until then a new InitProducerId, AddPartitionsToTxn or
  AddOffsetsToTxn of the same id is answered CONCURRENT_TRANSACTIONS; failed marker writes are
  retried by :meth:`retry_markers`.
* **Fencing.** Every request carries the producer id and epoch; anything but the current ones
  is refused (PRODUCER_FENCED, which handlers turn into INVALID_PRODUCER_EPOCH for versions
  without it). Each InitProducerId bumps the epoch, aborting an open transaction first with
  markers carrying the new epoch; a transaction open longer than its timeout is aborted the
  same way by :meth:`abort_timed_out`. So an EndTxn of an older epoch never ends a later
  transaction, and nothing a fenced producer sends afterwards becomes visible.
* **Produce verification (KIP-890 part 1).** :meth:`verify_produce` accepts a transactional
  batch only for a partition added to its producer's ongoing transaction, at the current epoch.
* **Retries.** EndTxn repeating the outcome of the transaction just completed succeeds; asking
  the other outcome is INVALID_TXN_STATE. A retried InitProducerId (v3+, KIP-360) carrying the
  epoch it asked to bump from gets the same answer, until its first transaction starts.

Not thread-safe: one event loop owns the coordinator, and no method awaits, so each request is
handled atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from typing import NamedTuple

from strom.broker.coordinator import errors
from strom.broker.coordinator.clock import Clock, wall_ms
from strom.broker.coordinator.crashpoints import crash_point
from strom.broker.coordinator.producers import InitProducerIdResult, ProducerIdManager
from strom.broker.coordinator.txn_log import TransactionLog, TxnMetadata, TxnState

__all__ = [
    "MarkerWriter",
    "OffsetCompleter",
    "TransactionCoordinator",
    "TxnDescription",
    "TxnListing",
]

log = logging.getLogger("strom.broker.transactions")

#: (topic, partition, producer id, producer epoch, commit, coordinator epoch): write one control
#: batch; raise if it could not be written (the coordinator retries). A partition that no longer
#: exists is the writer's to skip.
MarkerWriter = Callable[[str, int, int, int, bool, int], None]
#: (group, producer id, commit): publish or drop the offsets the producer staged for the group.
OffsetCompleter = Callable[[str, int, bool], None]

# Kafka treats an epoch of Short.MAX_VALUE - 1 as exhausted: the next bump takes a new id.
MAX_EPOCH = 32_766


class TxnDescription(NamedTuple):
    """DescribeTransactions for one id; while preparing, ``partitions`` lists only those still
    waiting for their marker (as Kafka describes them)."""

    transactional_id: str
    error_code: int
    state: str = ""
    producer_id: int = -1
    producer_epoch: int = -1
    timeout_ms: int = 0
    start_ms: int = -1
    partitions: tuple[tuple[str, int], ...] = ()
    groups: tuple[str, ...] = ()


class TxnListing(NamedTuple):
    transactional_id: str
    producer_id: int
    state: str


class TransactionCoordinator:
    """See the module docstring. ``write_marker`` and ``complete_offsets`` are how decisions
    reach the partition logs and the group offsets; ``partition_exists`` checks AddPartitions."""

    def __init__(
        self,
        txn_log: TransactionLog,
        producer_ids: ProducerIdManager,
        *,
        write_marker: MarkerWriter,
        complete_offsets: OffsetCompleter,
        partition_exists: Callable[[str, int], bool],
        max_timeout_ms: int = 900_000,
        clock: Clock = wall_ms,
    ) -> None:
        self._log = txn_log
        self._ids = producer_ids
        self._write_marker = write_marker
        self._complete_offsets = complete_offsets
        self._partition_exists = partition_exists
        self.max_timeout_ms = max_timeout_ms
        self._clock = clock
        self._txns: dict[str, TxnMetadata] = {}
        self._by_pid: dict[int, TxnMetadata] = {}

    @property
    def coordinator_epoch(self) -> int:
        return self._log.coordinator_epoch

    def recover(self) -> None:
        """Load the log and finish every transaction it shows as decided but not complete."""
        for meta in self._log.open().values():
            self._txns[meta.transactional_id] = meta
            self._by_pid[meta.producer_id] = meta
        for meta in self._txns.values():
            if meta.state.preparing:
                log.info(
                    "completing %s of transactional id %r after restart",
                    meta.state.value,
                    meta.transactional_id,
                )
                self._finish(meta)

    # -- producer ids -------------------------------------------------------------------------

    def init_producer_id(
        self,
        transactional_id: str,
        transaction_timeout_ms: int,
        producer_id: int = -1,
        producer_epoch: int = -1,
    ) -> InitProducerIdResult:
        """InitProducerId with a transactional id. ``producer_id``/``producer_epoch`` are what
        a v3+ client sends to bump its own epoch (KIP-360); -1 when absent."""
        if not transactional_id:
            return InitProducerIdResult(errors.INVALID_REQUEST)
        if not 0 < transaction_timeout_ms <= self.max_timeout_ms:
            return InitProducerIdResult(errors.INVALID_TRANSACTION_TIMEOUT)
        now = self._clock()
        meta = self._txns.get(transactional_id)
        if meta is None:
            meta = TxnMetadata(
                transactional_id, self._ids.allocate(), 0, transaction_timeout_ms, update_ms=now
            )
            self._txns[transactional_id] = meta
            self._by_pid[meta.producer_id] = meta
            self._log.write(meta)
            return InitProducerIdResult(errors.NONE, meta.producer_id, meta.producer_epoch)
        if meta.state.preparing and not self._finish(meta):
            return InitProducerIdResult(errors.CONCURRENT_TRANSACTIONS)
        if producer_id >= 0:
            given = (producer_id, producer_epoch)
            if meta.state.at_rest and given == (meta.prev_producer_id, meta.prev_epoch):
                return InitProducerIdResult(errors.NONE, meta.producer_id, meta.producer_epoch)
            if given != (meta.producer_id, meta.producer_epoch):
                return InitProducerIdResult(errors.PRODUCER_FENCED)
        # Only a bump the producer asked for itself (KIP-360) can be retried by it: a new
        # instance's plain InitProducerId must never hand its epoch to the one it fenced.
        if producer_id >= 0:
            meta.prev_producer_id, meta.prev_epoch = meta.producer_id, meta.producer_epoch
        else:
            meta.prev_producer_id, meta.prev_epoch = -1, -1
        if meta.state == TxnState.ONGOING:
            # The new epoch is on the abort markers already: the old instance is fenced in
            # every partition it wrote to, and the new one starts after the markers.
            bumped = meta.producer_epoch < MAX_EPOCH
            if bumped:
                meta.producer_epoch += 1
            self._end(meta, commit=False)
            if meta.state.preparing:
                return InitProducerIdResult(errors.CONCURRENT_TRANSACTIONS)
            if not bumped:
                self._bump(meta)
        else:
            self._bump(meta)
        meta.state = TxnState.EMPTY
        meta.timeout_ms = transaction_timeout_ms
        meta.update_ms = now
        self._log.write(meta)
        return InitProducerIdResult(errors.NONE, meta.producer_id, meta.producer_epoch)

    def _bump(self, meta: TxnMetadata) -> None:
        """The next epoch, or a fresh producer id at epoch 0 once the epoch is exhausted."""
        if meta.producer_epoch < MAX_EPOCH:
            meta.producer_epoch += 1
            return
        del self._by_pid[meta.producer_id]
        meta.producer_id, meta.producer_epoch = self._ids.allocate(), 0
        self._by_pid[meta.producer_id] = meta

    # -- a transaction ------------------------------------------------------------------------

    def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Collection[tuple[str, int]],
    ) -> dict[tuple[str, int], int]:
        """AddPartitionsToTxn: one error code per partition (all the same unless some are
        unknown: those get UNKNOWN_TOPIC_OR_PARTITION, the others OPERATION_NOT_ATTEMPTED)."""
        meta = self._txns.get(transactional_id)
        code = self._check_open(meta, producer_id, producer_epoch)
        if code != errors.NONE or meta is None:
            return dict.fromkeys(partitions, code)
        unknown = {tp for tp in partitions if not self._partition_exists(*tp)}
        if unknown:
            return {
                tp: errors.UNKNOWN_TOPIC_OR_PARTITION
                if tp in unknown
                else errors.OPERATION_NOT_ATTEMPTED
                for tp in partitions
            }
        if meta.state != TxnState.ONGOING or not meta.partitions.issuperset(partitions):
            self._begin(meta)
            meta.partitions.update(partitions)
            self._log.write(meta)
        return dict.fromkeys(partitions, errors.NONE)

    def add_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> int:
        """AddOffsetsToTxn: the group's offsets may now be staged in this transaction."""
        if not group_id:
            return errors.INVALID_GROUP_ID
        meta = self._txns.get(transactional_id)
        code = self._check_open(meta, producer_id, producer_epoch)
        if code != errors.NONE or meta is None:
            return code
        if meta.state != TxnState.ONGOING or group_id not in meta.groups:
            self._begin(meta)
            meta.groups.add(group_id)
            self._log.write(meta)
        return errors.NONE

    def check_offset_commit(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> int:
        """May TxnOffsetCommit stage offsets for ``group_id`` in this transaction now?"""
        meta = self._txns.get(transactional_id)
        code = self._check(meta, producer_id, producer_epoch)
        if code != errors.NONE or meta is None:
            return code
        if meta.state != TxnState.ONGOING or group_id not in meta.groups:
            return errors.INVALID_TXN_STATE
        return errors.NONE

    def end_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int, *, commit: bool
    ) -> int:
        """EndTxn: decide the open transaction (see the module docstring for retries)."""
        meta = self._txns.get(transactional_id)
        code = self._check(meta, producer_id, producer_epoch)
        if code != errors.NONE or meta is None:
            return code
        state = meta.state
        if state.preparing:
            if (state == TxnState.PREPARE_COMMIT) != commit:
                return errors.INVALID_TXN_STATE
            return errors.NONE if self._finish(meta) else errors.CONCURRENT_TRANSACTIONS
        if state == TxnState.ONGOING:
            if self._expired(meta, self._clock()):
                self._fence(meta)
                return errors.PRODUCER_FENCED
            self._end(meta, commit=commit)
            return errors.NONE
        if state == (TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT):
            return errors.NONE  # a retry of the EndTxn that completed it
        return errors.INVALID_TXN_STATE

    def verify_produce(
        self, producer_id: int, producer_epoch: int, topic: str, partition: int
    ) -> int:
        """May a transactional batch of this producer be appended to this partition?"""
        meta = self._by_pid.get(producer_id)
        if meta is None:
            return errors.INVALID_PRODUCER_ID_MAPPING
        if producer_epoch != meta.producer_epoch:
            return errors.INVALID_PRODUCER_EPOCH
        if meta.state != TxnState.ONGOING or (topic, partition) not in meta.partitions:
            return errors.INVALID_TXN_STATE
        return errors.NONE

    # -- timers -------------------------------------------------------------------------------

    def abort_timed_out(self) -> list[str]:
        """Abort, with a bumped epoch, every transaction open longer than its timeout."""
        now = self._clock()
        expired = [m for m in self._txns.values() if self._expired(m, now)]
        for meta in expired:
            log.info(
                "aborting transaction of %r: open for longer than its timeout of %d ms",
                meta.transactional_id,
                meta.timeout_ms,
            )
            self._fence(meta)
        return [m.transactional_id for m in expired]

    def retry_markers(self) -> None:
        """Try again to finish transactions whose markers could not all be written."""
        for meta in list(self._txns.values()):
            if meta.state.preparing:
                self._finish(meta)

    def sync(self) -> None:
        self._log.sync()

    def close(self) -> None:
        self._log.close()

    # -- tooling ------------------------------------------------------------------------------

    def describe(self, transactional_id: str) -> TxnDescription:
        meta = self._txns.get(transactional_id)
        if meta is None:
            return TxnDescription(transactional_id, errors.TRANSACTIONAL_ID_NOT_FOUND)
        return TxnDescription(
            transactional_id,
            errors.NONE,
            meta.state.value,
            meta.producer_id,
            meta.producer_epoch,
            meta.timeout_ms,
            meta.start_ms,
            tuple(sorted(meta.partitions)),
            tuple(sorted(meta.groups)),
        )

    def list_transactions(
        self,
        states: Iterable[str] = (),
        producer_ids: Iterable[int] = (),
        min_duration_ms: int = -1,
    ) -> tuple[list[str], list[TxnListing]]:
        """ListTransactions: the unknown state names among ``states``, and the listing.

        Empty filters match everything; ``min_duration_ms >= 0`` keeps only transactions open
        for longer than that."""
        known = {s.value for s in TxnState}
        wanted_states = set(states)
        unknown = sorted(wanted_states - known)
        wanted_pids = set(producer_ids)
        now = self._clock()
        listing = [
            TxnListing(m.transactional_id, m.producer_id, m.state.value)
            for _, m in sorted(self._txns.items())
            if (not wanted_states or m.state.value in wanted_states)
            and (not wanted_pids or m.producer_id in wanted_pids)
            and (min_duration_ms < 0 or (m.start_ms >= 0 and now - m.start_ms > min_duration_ms))
        ]
        return unknown, listing

    # -- internals ----------------------------------------------------------------------------

    def _check(self, meta: TxnMetadata | None, producer_id: int, producer_epoch: int) -> int:
        if meta is None:
            return errors.INVALID_PRODUCER_ID_MAPPING
        if producer_id != meta.producer_id:
            return errors.INVALID_PRODUCER_ID_MAPPING
        if producer_epoch != meta.producer_epoch:
            return errors.PRODUCER_FENCED
        return errors.NONE

    def _check_open(self, meta: TxnMetadata | None, producer_id: int, producer_epoch: int) -> int:
        """``_check``, then: may the transaction take a new partition or group now?"""
        code = self._check(meta, producer_id, producer_epoch)
        if code != errors.NONE or meta is None:
            return code
        if meta.state.preparing and not self._finish(meta):
            return errors.CONCURRENT_TRANSACTIONS
        if self._expired(meta, self._clock()):
            self._fence(meta)
            return errors.PRODUCER_FENCED
        return errors.NONE

    @staticmethod
    def _expired(meta: TxnMetadata, now: int) -> bool:
        return meta.state == TxnState.ONGOING and now - meta.start_ms > meta.timeout_ms

    def _begin(self, meta: TxnMetadata) -> None:
        now = self._clock()
        if meta.state != TxnState.ONGOING:
            meta.state = TxnState.ONGOING
            meta.start_ms = now
            meta.prev_producer_id, meta.prev_epoch = -1, -1  # no InitProducerId retry now
            meta.partitions = set()
            meta.groups = set()
        meta.update_ms = now

    def _fence(self, meta: TxnMetadata) -> None:
        """Abort the open transaction with a bumped epoch: its producer can do nothing more."""
        meta.prev_producer_id, meta.prev_epoch = -1, -1  # and cannot resume by KIP-360
        exhausted = meta.producer_epoch >= MAX_EPOCH
        if not exhausted:
            meta.producer_epoch += 1
        self._end(meta, commit=False)
        if exhausted and not meta.state.preparing:
            self._bump(meta)
            self._log.write(meta)

    def _end(self, meta: TxnMetadata, *, commit: bool) -> None:
        """Persist the decision, then write it everywhere (:meth:`_finish`)."""
        meta.state = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        meta.update_ms = self._clock()
        self._log.write(meta)
        crash_point("txn-prepared")
        self._finish(meta)

    def _finish(self, meta: TxnMetadata) -> bool:
        """Write the markers and offsets of a preparing transaction, then log it complete.

        Partitions and groups are dropped from ``meta`` (in memory) as they are done, so a retry
        resumes where a failure stopped; the logged ``Prepare*`` record keeps them all, so a
        restart redoes all of them. Returns whether the transaction is complete.
        """
        commit = meta.state == TxnState.PREPARE_COMMIT
        pid, epoch = meta.producer_id, meta.producer_epoch
        try:
            for topic, partition in sorted(meta.partitions):
                self._write_marker(topic, partition, pid, epoch, commit, self.coordinator_epoch)
                meta.partitions.discard((topic, partition))
                crash_point("txn-first-marker")
            for group in sorted(meta.groups):
                self._complete_offsets(group, pid, commit)
                meta.groups.discard(group)
        except Exception:
            log.exception(
                "transaction of %r: cannot write its %s markers yet; will retry",
                meta.transactional_id,
                "commit" if commit else "abort",
            )
            return False
        crash_point("txn-markers-written")
        meta.state = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        meta.start_ms = -1
        meta.update_ms = self._clock()
        self._log.write(meta)
        crash_point("txn-completed")
        return True
