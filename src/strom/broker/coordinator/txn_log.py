"""The transaction log: every transactional id's state, persisted before the coordinator acts.

Like Kafka's ``__transaction_state`` topic, the log holds one record per state change of a
transactional id, each the *whole* metadata of that id (producer id and epoch, state, partitions
and groups in the transaction, timeout, start time), so the last record of an id is its state
and compaction keeps exactly one record per id. One more record kind holds the coordinator
epoch, bumped on every open, which is stamped on the markers this process writes.

Guarantees of :class:`TransactionLog`:

* :meth:`write` puts the record in the OS before it returns (a process crash, ``kill -9``,
  loses nothing) and with ``flush_always`` fsyncs it too (a machine crash loses nothing); the
  coordinator calls it *before* acting on the state it records.
* :meth:`open` replays the file, truncating a torn tail, and returns the last state of each id.
* The file is compacted (atomically rewritten with the live records) once it has grown to
  twice their size, and on open.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from strom.broker.coordinator import journal

__all__ = ["TransactionLog", "TxnMetadata", "TxnState"]

log = logging.getLogger("strom.broker.transactions")


class TxnState(enum.StrEnum):
    """Kafka's transaction states, spelled as DescribeTransactions and ListTransactions print
    them. ``Empty`` and the two ``Complete`` states are at rest (no transaction open); in the
    ``Prepare`` states the decision is durable and its markers are being written."""

    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"

    @property
    def preparing(self) -> bool:
        return self in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)

    @property
    def at_rest(self) -> bool:
        return self in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)


@dataclass(slots=True)
class TxnMetadata:
    """One transactional id. ``partitions`` and ``groups`` are those of the open (or preparing)
    transaction and empty at rest; ``start_ms`` is the wall-clock time of its first
    AddPartitionsToTxn/AddOffsetsToTxn (-1 at rest). ``prev_producer_id``/``prev_epoch`` are the
    values an InitProducerId bumped from, so that its retry (KIP-360) gets the same answer."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[tuple[str, int]] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    start_ms: int = -1
    update_ms: int = -1
    prev_producer_id: int = -1
    prev_epoch: int = -1

    def to_record(self) -> dict[str, Any]:
        return {
            "t": "txn",
            "id": self.transactional_id,
            "pid": self.producer_id,
            "epoch": self.producer_epoch,
            "timeout": self.timeout_ms,
            "state": self.state.value,
            "parts": sorted([t, p] for t, p in self.partitions),
            "groups": sorted(self.groups),
            "start": self.start_ms,
            "update": self.update_ms,
            "prev": [self.prev_producer_id, self.prev_epoch],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TxnMetadata:
        prev_pid, prev_epoch = record["prev"]
        return cls(
            transactional_id=record["id"],
            producer_id=int(record["pid"]),
            producer_epoch=int(record["epoch"]),
            timeout_ms=int(record["timeout"]),
            state=TxnState(record["state"]),
            partitions={(str(t), int(p)) for t, p in record["parts"]},
            groups={str(g) for g in record["groups"]},
            start_ms=int(record["start"]),
            update_ms=int(record["update"]),
            prev_producer_id=int(prev_pid),
            prev_epoch=int(prev_epoch),
        )


class TransactionLog:
    """The durable state of every transactional id. One event loop owns it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_always: bool = False,
        compact_min_bytes: int = 1 << 20,
    ) -> None:
        self._journal = journal.JournalFile(
            path, flush_always=flush_always, compact_min_bytes=compact_min_bytes, log=log
        )
        self._latest: dict[str, dict[str, Any]] = {}
        self.coordinator_epoch = 0

    def open(self) -> dict[str, TxnMetadata]:
        """Replay the log and bump the coordinator epoch; the last state of each id."""
        for record in self._journal.open():
            kind = record.get("t")
            if kind == "txn":
                self._latest[record["id"]] = record
            elif kind == "epoch":
                self.coordinator_epoch = int(record["value"])
            else:
                log.warning("%s: skipping unknown record type %r", self._journal.path, kind)
        states = {tid: TxnMetadata.from_record(r) for tid, r in self._latest.items()}
        self.coordinator_epoch += 1
        self._journal.append({"t": "epoch", "value": self.coordinator_epoch})
        self._journal.compact(self._live())
        return states

    def write(self, meta: TxnMetadata) -> None:
        """Persist ``meta`` as the current state of its id (see the module docstring)."""
        record = meta.to_record()
        self._journal.append(record)
        self._latest[meta.transactional_id] = record
        self._journal.maybe_compact(self._live)

    def sync(self) -> None:
        self._journal.sync()

    def close(self) -> None:
        self._journal.close()

    @property
    def file_size(self) -> int:
        return self._journal.size

    def _live(self) -> Iterator[dict[str, Any]]:
        yield {"t": "epoch", "value": self.coordinator_epoch}
        yield from (self._latest[tid] for tid in sorted(self._latest))
