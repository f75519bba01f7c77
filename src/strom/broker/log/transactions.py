"""Producer and transaction state of one partition, derived from its batches (KIP-98).

:class:`ProducerStateTable` folds batch headers in offset order: for every producer id its
epoch, last sequence and timestamp, the coordinator epoch of its last marker, and the first
offset of its ongoing transaction on this partition. Data batches with the transactional bit
start a transaction (if none is ongoing); a control batch (a commit or abort marker) ends it, and
an abort yields an :class:`~strom.broker.log.txnindex.AbortedTxn` for the segment's index.

Invariants (``state(o)`` is the fold of every batch below offset ``o``):

* the partition keeps ``state(log_end_offset)`` in memory;
* a snapshot file ``<o>.snapshot`` holds ``state(o)``; it is written only after every batch
  below ``o`` is on disk (at a segment roll, ``o`` = the new segment's base; at clean close,
  ``o`` = the log end), so no recovery ever cuts the log below a snapshot's offset;
* recovery loads the newest readable snapshot within ``[log_start_offset, log_end_offset]``
  (none: the empty state at the log start) and folds the batches from there to the end. A
  transaction that started in an old segment is in the snapshot, however old; a marker
  written just before a crash is met by the replay.

Snapshot format (strom's own, big-endian): ``b"STXS"``, version uint16 (1), offset int64,
count uint32, then per producer ``producer_id int64, epoch int16, last_sequence int32,
last_timestamp int64, coordinator_epoch int32, txn_start_offset int64`` (-1: none), then a
CRC-32C (uint32) of everything before it. A file failing any check is ignored.

Producers are never expired (Kafka expires them after ``producer.id.expiration.ms``).
"""

from __future__ import annotations

import bisect
import logging
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import crc32c

from strom.broker.log.errors import InvalidProducerEpochError, TransactionCoordinatorFencedError
from strom.broker.log.fileio import atomic_write
from strom.broker.log.segment import Segment, scan_batches
from strom.broker.log.txnindex import AbortedTxn
from strom.kafka.protocol.records import (
    ATTR_TRANSACTIONAL,
    BatchHeader,
    ControlMarker,
    CorruptRecordError,
    parse_control_marker,
)

__all__ = [
    "SNAPSHOT_FILE",
    "ProducerState",
    "ProducerStateTable",
    "read_snapshot",
    "recover_state",
    "remove_snapshots",
    "snapshot_offsets",
    "write_snapshot",
]

log = logging.getLogger("strom.broker.log")

SNAPSHOT_FILE: Final = re.compile(r"^(\d{20})\.snapshot$")
_MAGIC: Final = b"STXS"
_HEAD: Final = struct.Struct(">4sHqI")
_ENTRY: Final = struct.Struct(">qhiqiq")
_CRC: Final = struct.Struct(">I")
_MAX_SEQUENCE: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ProducerState:
    """What a partition knows of one producer (DescribeProducers answers with these)."""

    producer_id: int
    producer_epoch: int
    last_sequence: int  # -1: none (transaction markers carry no sequence)
    last_timestamp: int
    coordinator_epoch: int  # of the last marker that ended one of its transactions; -1: none
    current_txn_start_offset: int  # first offset of its ongoing transaction here; -1: none


@dataclass(slots=True)
class _Producer:
    """A producer's mutable entry (updated in place on the append path)."""

    epoch: int
    last_sequence: int = -1
    last_timestamp: int = -1
    coordinator_epoch: int = -1
    txn_start: int = -1


class ProducerStateTable:
    """Producer id -> :class:`ProducerState` for one partition, and its ongoing transactions."""

    def __init__(self, states: Iterable[ProducerState] = ()) -> None:
        self._states: dict[int, _Producer] = {}
        self._ongoing: dict[int, int] = {}  # producer id: first offset of its transaction
        for s in states:
            self._states[s.producer_id] = _Producer(
                s.producer_epoch,
                s.last_sequence,
                s.last_timestamp,
                s.coordinator_epoch,
                s.current_txn_start_offset,
            )
            if s.current_txn_start_offset >= 0:
                self._ongoing[s.producer_id] = s.current_txn_start_offset

    def states(self) -> list[ProducerState]:
        return [
            ProducerState(
                pid, p.epoch, p.last_sequence, p.last_timestamp, p.coordinator_epoch, p.txn_start
            )
            for pid, p in sorted(self._states.items())
        ]

    def first_unstable_offset(self) -> int | None:
        """The first offset of the oldest ongoing transaction, if any."""
        return min(self._ongoing.values()) if self._ongoing else None

    def check_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int) -> None:
        """Refuse a marker from an older producer epoch or an older coordinator."""
        p = self._states.get(producer_id)
        if p is None:
            return
        if producer_epoch < p.epoch:
            raise InvalidProducerEpochError(
                f"marker for producer {producer_id} has epoch {producer_epoch}, "
                f"older than its latest {p.epoch} on this partition"
            )
        if coordinator_epoch < p.coordinator_epoch:
            raise TransactionCoordinatorFencedError(
                f"marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, "
                f"older than {p.coordinator_epoch}"
            )

    def apply_data(self, h: BatchHeader) -> None:
        """Fold a data batch (one with a producer id) in."""
        pid = h.producer_id
        p = self._states.get(pid)
        if p is None:
            p = self._states[pid] = _Producer(h.producer_epoch)
        elif h.producer_epoch > p.epoch:
            # never lowered: a zombie's batch (the produce path should have fenced it) must
            # not let its stale markers through
            p.epoch = h.producer_epoch
        p.last_sequence = _last_sequence(h.base_sequence, h.last_offset_delta)
        p.last_timestamp = h.max_timestamp
        if p.txn_start < 0 and h.attributes & ATTR_TRANSACTIONAL:
            p.txn_start = self._ongoing[pid] = h.base_offset

    def apply_marker(self, h: BatchHeader, marker: ControlMarker) -> AbortedTxn | None:
        """Fold a marker in: it ends the producer's ongoing transaction, if any (else it changes
        nothing). Returns the aborted transaction for the index, for an abort."""
        pid = h.producer_id
        first = self._ongoing.pop(pid, None)
        p = self._states.get(pid)
        if first is None or p is None:
            return None
        p.epoch = max(p.epoch, h.producer_epoch)
        p.last_timestamp = h.max_timestamp
        p.coordinator_epoch = marker.coordinator_epoch
        p.txn_start = -1
        return None if marker.commit else AbortedTxn(pid, first, h.base_offset)


def _last_sequence(base_sequence: int, delta: int) -> int:
    """The batch's last sequence number; sequences wrap from int32's maximum to 0 (as Kafka's
    ``DefaultRecordBatch.incrementSequence``). -1 for a batch without sequences."""
    if base_sequence < 0:
        return -1
    if base_sequence > _MAX_SEQUENCE - delta:
        return delta - (_MAX_SEQUENCE - base_sequence) - 1
    return base_sequence + delta


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}.snapshot"


def write_snapshot(directory: Path, offset: int, table: ProducerStateTable) -> Path:
    """Write ``table`` as ``state(offset)`` durably (temporary file, fsync, rename)."""
    states = table.states()
    body = bytearray(_HEAD.pack(_MAGIC, 1, offset, len(states)))
    for s in states:
        body += _ENTRY.pack(
            s.producer_id,
            s.producer_epoch,
            s.last_sequence,
            s.last_timestamp,
            s.coordinator_epoch,
            s.current_txn_start_offset,
        )
    body += _CRC.pack(crc32c.crc32c(body))
    path = directory / snapshot_name(offset)
    atomic_write(path, bytes(body))
    return path


def read_snapshot(path: Path) -> tuple[int, ProducerStateTable] | None:
    """``(offset, table)`` of a snapshot file, or None when it is unreadable or damaged."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < _HEAD.size + _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if crc32c.crc32c(data[: -_CRC.size]) != crc:
        return None
    magic, version, offset, count = _HEAD.unpack_from(data)
    if magic != _MAGIC or version != 1 or len(data) != _HEAD.size + count * _ENTRY.size + _CRC.size:
        return None
    states = [
        ProducerState(*fields)
        for fields in _ENTRY.iter_unpack(data[_HEAD.size : len(data) - _CRC.size])
    ]
    return offset, ProducerStateTable(states)


def snapshot_offsets(directory: Path) -> list[int]:
    """The offsets of the snapshot files in ``directory``, ascending."""
    return sorted(int(m[1]) for p in directory.iterdir() if (m := SNAPSHOT_FILE.match(p.name)))


def remove_snapshots(directory: Path, low: int, high: int, keep: int = 2) -> None:
    """Delete the snapshots outside ``[low, high]`` and all but the newest ``keep`` inside."""
    offsets = snapshot_offsets(directory)
    inside = [o for o in offsets if low <= o <= high]
    wanted = set(inside[-keep:])
    for o in offsets:
        if o not in wanted:
            (directory / snapshot_name(o)).unlink(missing_ok=True)


def fold_batch(
    table: ProducerStateTable, h: BatchHeader, marker: ControlMarker | None
) -> AbortedTxn | None:
    """Fold one batch in (``marker``: its parsed marker when it is a control batch)."""
    if h.producer_id < 0:
        return None
    if marker is not None:
        return table.apply_marker(h, marker)
    if not h.is_control:
        table.apply_data(h)
    return None


def recover_state(directory: Path, segments: Sequence[Segment]) -> ProducerStateTable:
    """``state(log_end_offset)`` of an opened log: the newest usable snapshot, then a replay
    of the batches after it, which also rewrites the aborted-transaction entries of markers
    at or after the snapshot's offset (so a marker whose entry was lost in a crash, or an entry
    whose marker was cut off as a torn tail, is set right). Without a usable snapshot the whole
    log is replayed (transactions begun in segments that retention deleted are then unknown)."""
    start, end = segments[0].base_offset, segments[-1].next_offset
    table, origin = ProducerStateTable(), start
    for offset in reversed(snapshot_offsets(directory)):
        if not start <= offset <= end:
            continue
        loaded = read_snapshot(directory / snapshot_name(offset))
        if loaded is not None and loaded[0] == offset:
            origin, table = offset, loaded[1]
            break
        log.warning("%s: ignoring damaged snapshot %s", directory, snapshot_name(offset))
    bases = [seg.base_offset for seg in segments]
    for seg in segments[max(bisect.bisect_right(bases, origin) - 1, 0) :]:
        seg.txn_index.truncate_from(origin)
        pos, first = 0, seg.base_offset
        if seg.base_offset < origin:
            found = seg.find_offset(origin)
            if found is None:
                continue
            pos, first = found[0], found[1].base_offset
        for h, p in scan_batches(seg.fd, pos, seg.size, first, verify_crc=False):
            if h.base_offset < origin:
                continue  # already in the snapshot (a snapshot offset is a batch start)
            marker = None
            if h.is_control and h.producer_id >= 0:
                try:
                    marker = parse_control_marker(seg.read_batch(p, h.size))
                except CorruptRecordError as exc:
                    log.warning("%s: control batch at %d: %s", directory, h.base_offset, exc)
                    continue
            aborted = fold_batch(table, h, marker)
            if aborted is not None:
                seg.txn_index.append(aborted)
    remove_snapshots(directory, start, end)
    return table
