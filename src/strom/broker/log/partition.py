"""The log of one partition: an ordered list of segments in ``<data_dir>/<topic>-<partition>/``.

Invariants between calls: segments are ordered by base offset; only the last (active) one is
appended to; offsets are contiguous from ``log_start_offset`` (the first segment's base) to
``log_end_offset``; every byte range a read returns is whole, CRC-checked-on-arrival batches.

Durability: with ``flush=always`` an append returns only after fdatasync, so after a crash
(``kill -9`` or power loss) every acknowledged batch is present exactly once. Recovery on open
CRC-checks the active segment and cuts it at the first torn or corrupt batch, unless the log
was closed cleanly (a ``.clean-shutdown`` marker, removed durably before any new append).

Transactions (KIP-98): the log folds every batch with a producer id into a
:class:`~strom.broker.log.transactions.ProducerStateTable` (the producers' epochs, sequences and
ongoing transactions on this partition), persisted as ``<offset>.snapshot`` files at each roll
and at clean close and rebuilt on open (see :mod:`strom.broker.log.transactions` for the
invariants). Abort markers go to their segment's ``.txnindex``
(:mod:`strom.broker.log.txnindex`), which retention deletes with the segment. The last stable
offset is the first offset of the oldest ongoing transaction (never below the log start), or
the high watermark when none is ongoing.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from strom._fs import fsync_path
from strom.broker.log.config import LogConfig
from strom.broker.log.errors import LogStorageError, OffsetOutOfRangeError, RecordTooLargeError
from strom.broker.log.fileio import DeferredCloser, pread_all
from strom.broker.log.retention import SegmentStats, segments_to_delete
from strom.broker.log.segment import CLEAN_MARKER, Segment, open_segments, scan_batches
from strom.broker.log.transactions import (
    ProducerState,
    fold_batch,
    recover_state,
    remove_snapshots,
    write_snapshot,
)
from strom.broker.log.txnindex import collect_aborted
from strom.kafka.protocol.records import (
    BatchHeader,
    ControlMarker,
    RecordError,
    assign_offsets,
    build_control_batch,
    decode_batch,
    iter_batches,
    parse_control_marker,
    validate_produce_records,
)

__all__ = ["AppendResult", "PartitionLog", "ReadResult"]

log = logging.getLogger("strom.broker.log")

_MAX_RELATIVE_OFFSET: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    """``length`` bytes at ``position`` of open file ``fd``: whole batches, for ``sendfile``.

    An empty result has ``fd == -1``. The region stays readable until the partition is closed;
    if retention or topic deletion removes its segment first, for ``file.delete.delay.ms`` more.
    """

    fd: int
    position: int
    length: int
    high_watermark: int
    log_start_offset: int
    last_stable_offset: int = -1
    #: The offset after the region's last batch (the read offset when the region is empty).
    end_offset: int = -1

    def read_bytes(self) -> bytes:
        return pread_all(self.fd, self.length, self.position) if self.length else b""


class PartitionLog:
    """One partition's log. Not thread-safe: call it from one thread (the event loop).

    ``version`` increases with every successful append (transaction markers included), and
    each callable in ``on_append`` is called with its :class:`AppendResult`; long-polling
    fetches wait on either.

    The transaction interface (for the transaction coordinator and Fetch): :meth:`append`
    takes transactional batches (attributes bit 4) and opens the producer's transaction here at
    the first one; :meth:`append_marker` ends it; :attr:`last_stable_offset`,
    :meth:`aborted_transactions` and :meth:`producer_states` report the state. Whether a
    partition was added to a transaction is the coordinator's check, not the log's.
    """

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        *,
        closer: DeferredCloser | None = None,
        leader_epoch: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.config = config
        self.leader_epoch = leader_epoch
        self.version = 0
        self.on_append: list[Callable[[AppendResult], None]] = []
        self._closer = closer if closer is not None else DeferredCloser()
        self._owns_closer = closer is None
        self._last_flush_ms: int | None = None
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._segments = open_segments(self.directory, config.index_interval_bytes)
        except OSError as exc:
            raise LogStorageError(f"cannot open log {self.directory}: {exc}") from exc
        try:
            self._producers = recover_state(self.directory, self._segments)
        except OSError as exc:
            for seg in self._segments:
                seg.close()
            raise LogStorageError(f"cannot recover {self.directory}: {exc}") from exc
        self._max_span = max((seg.txn_index.max_span for seg in self._segments), default=0)

    # -- state -----------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def high_watermark(self) -> int:
        """Equal to the log end offset: a single node has nothing to replicate."""
        return self._segments[-1].next_offset

    @property
    def last_stable_offset(self) -> int:
        """The first offset of the oldest ongoing transaction (at least the log start offset),
        or the high watermark when no transaction is ongoing. read_committed reads below it."""
        first = self._producers.first_unstable_offset()
        if first is None:
            return self.high_watermark
        return min(max(first, self.log_start_offset), self.high_watermark)

    def producer_states(self) -> list[ProducerState]:
        """Every producer id this partition has a batch of, by id (for DescribeProducers)."""
        return self._producers.states()

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[tuple[int, int]]:
        """``(producer_id, first_offset)`` of every aborted transaction whose offsets overlap
        ``[start_offset, end_offset)`` (its first offset is below ``end_offset``, its abort
        marker at or after ``start_offset``), across every segment, in marker order."""
        self._check_open()
        if end_offset <= start_offset:
            return []
        i = max(bisect.bisect_right(self.segment_base_offsets, start_offset) - 1, 0)
        indexes = (seg.txn_index for seg in self._segments[i:])
        return collect_aborted(indexes, start_offset, end_offset, self._max_span)

    @property
    def size_bytes(self) -> int:
        return sum(seg.size for seg in self._segments)

    @property
    def segment_base_offsets(self) -> list[int]:
        return [seg.base_offset for seg in self._segments]

    @property
    def is_dirty(self) -> bool:
        """Whether appended bytes may not yet be on disk."""
        return any(seg.unflushed for seg in self._segments)

    # -- append ----------------------------------------------------------------------------

    def append(
        self,
        records: bytes | bytearray | memoryview,
        now_ms: int,
        *,
        allow_control: bool = False,
        validated: Sequence[BatchHeader] | None = None,
    ) -> AppendResult:
        """Validate ``records`` (unless ``validated`` holds their headers), give the batches the
        next offsets, write them to the active segment, rolling it first when due.

        Batches with a producer id update its state; a transactional one opens the producer's
        transaction on this partition unless one is open. Control batches (``allow_control``)
        must be end-transaction markers and pass :meth:`append_marker`'s checks.

        Raises CorruptRecordError / UnsupportedMagicError (from records validation),
        :class:`RecordTooLargeError`, :class:`InvalidProducerEpochError` /
        :class:`TransactionCoordinatorFencedError` (a stale marker), or
        :class:`LogStorageError` with the log unchanged.
        """
        self._check_open()
        headers = validated
        if headers is None:
            headers = validate_produce_records(records, allow_control=allow_control)
        for h in headers:
            if h.size > self.config.max_message_bytes:
                raise RecordTooLargeError(
                    f"batch of {h.size} bytes exceeds max.message.bytes "
                    f"({self.config.max_message_bytes})"
                )
        markers = self._check_markers(records, headers)
        data = bytearray(records)
        base = self.log_end_offset
        last = assign_offsets(data, base, leader_epoch=self.leader_epoch) - 1
        stamped = [h for h, _ in iter_batches(data)]
        try:
            segment = self._segment_for(len(data), last, now_ms)
            segment.append(
                data,
                stamped,
                now_ms,
                index_interval_bytes=self.config.index_interval_bytes,
                sync=self.config.flush.always,
            )
        except OSError as exc:
            raise LogStorageError(f"cannot append to {self.directory}: {exc}") from exc
        for i, h in enumerate(stamped):
            aborted = fold_batch(self._producers, h, markers.get(i))
            if aborted is not None:
                segment.txn_index.append(aborted)
                self._max_span = max(self._max_span, aborted.last_offset - aborted.first_offset)
        if self._last_flush_ms is None:
            self._last_flush_ms = now_ms
        interval = self.config.flush.interval_ms
        if interval is not None and now_ms - self._last_flush_ms >= interval:
            try:
                self.flush(now_ms)
            except LogStorageError as exc:
                log.warning("%s: periodic flush failed: %s", self.directory, exc)
        self.version += 1
        result = AppendResult(base, last, self.log_start_offset)
        for callback in list(self.on_append):
            try:
                callback(result)
            except Exception:
                log.exception("%s: on_append callback failed", self.directory)
        return result

    def append_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        *,
        commit: bool,
        coordinator_epoch: int,
        now_ms: int,
    ) -> AppendResult:
        """Append an end-transaction marker (a control batch: transactional and control bits,
        base sequence -1, one control record: key = int16 version 0 + int16 type (0 abort,
        1 commit), value = int16 version 0 + int32 coordinator epoch).

        It ends the producer's ongoing transaction on this partition; an abort also enters
        ``(producer_id, first offset, marker offset)`` in the aborted-transaction index. A
        marker for a producer with no ongoing transaction here is written all the same and
        changes nothing else (re-applying markers after a coordinator restart is harmless).
        Raises :class:`InvalidProducerEpochError` for an epoch older than the producer's latest
        on this partition, :class:`TransactionCoordinatorFencedError` for a coordinator epoch
        older than its last marker's, and what :meth:`append` raises.
        """
        batch = build_control_batch(
            producer_id,
            producer_epoch,
            commit=commit,
            coordinator_epoch=coordinator_epoch,
            timestamp_ms=now_ms,
        )
        return self.append(batch, now_ms, allow_control=True)

    def _check_markers(
        self, records: bytes | bytearray | memoryview, headers: Sequence[BatchHeader]
    ) -> dict[int, ControlMarker]:
        """The markers among ``records``' batches by batch index, each checked against the
        producer's state (nothing is changed)."""
        if not any(h.is_control for h in headers):
            return {}
        markers: dict[int, ControlMarker] = {}
        for i, (h, pos) in enumerate(iter_batches(records)):
            if h.is_control:
                marker = parse_control_marker(records, pos)
                self._producers.check_marker(
                    h.producer_id, h.producer_epoch, marker.coordinator_epoch
                )
                markers[i] = marker
        return markers

    def _segment_for(self, nbytes: int, last_offset: int, now_ms: int) -> Segment:
        active = self._segments[-1]
        cfg = self.config
        if active.size > 0 and (
            active.size + nbytes > cfg.segment_bytes
            or (
                active.rolling_base_ms is not None
                and now_ms - active.rolling_base_ms >= cfg.segment_ms
            )
            or last_offset - active.base_offset > _MAX_RELATIVE_OFFSET
        ):
            self._roll()
        return self._segments[-1]

    def _roll(self) -> None:
        """Seal the active segment durably, then start a new one at the log end offset."""
        active = self._segments[-1]
        active.flush(indexes=True)
        # state(new base), once every batch below it is on disk: what recovery starts from
        write_snapshot(self.directory, active.next_offset, self._producers)
        remove_snapshots(self.directory, self.log_start_offset, active.next_offset)
        segment = Segment.open(
            self.directory,
            active.next_offset,
            recover=True,
            index_interval_bytes=self.config.index_interval_bytes,
        )
        try:
            fsync_path(self.directory)
        except OSError:
            segment.delete(self._closer, 0)
            raise
        active.seal(sync=False)  # only once the new segment exists: the old one stays usable
        self._segments.append(segment)

    # -- read ------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, committed: bool = False) -> ReadResult:
        """Whole batches from the one containing ``offset``, up to ``max_bytes`` but at least one
        batch (KIP-74), from a single segment. ``offset == log_end_offset`` reads nothing.

        With ``committed`` (read_committed) only batches whose last offset is below the last
        stable offset are returned, even if that leaves none.
        """
        self._check_open()
        start, end, stable = self.log_start_offset, self.log_end_offset, self.last_stable_offset
        if not start <= offset <= end:
            raise OffsetOutOfRangeError(offset, start, end)
        limit = stable if committed else end
        if offset >= limit:
            return ReadResult(-1, 0, 0, end, start, stable, offset)
        i = bisect.bisect_right(self.segment_base_offsets, offset) - 1
        try:
            for seg in self._segments[i:]:
                found = seg.find_offset(offset)
                if found is None:
                    continue
                pos, header = found
                stop = None
                if limit < seg.next_offset:
                    unstable = seg.find_offset(limit)
                    stop = seg.size if unstable is None else unstable[0]
                    if stop <= pos:  # the batch holding ``offset`` reaches the LSO
                        return ReadResult(-1, 0, 0, end, start, stable, offset)
                length = seg.region_length(pos, header.size, max_bytes, stop)
                after = seg.offset_at(pos + length)
                return ReadResult(seg.fd, pos, length, end, start, stable, after)
        except OSError as exc:
            raise LogStorageError(f"cannot read {self.directory}: {exc}") from exc
        raise LogStorageError(f"{self.directory}: no batch holds offset {offset}")

    def recent_batches(self, tail_bytes: int) -> Iterator[BatchHeader]:
        """Headers of the newest batches in offset order: the whole active segment, after up to
        ``tail_bytes`` from the end of the segment before it (batches in flight when the broker
        stopped may straddle a roll). Headers only, no CRC check: the log was recovered or found
        clean on open. For rebuilding idempotent producers' state."""
        self._check_open()
        try:
            if len(self._segments) > 1:
                prev = self._segments[-2]
                pos, first = 0, prev.base_offset
                entry = prev.index.floor_value(max(prev.size - tail_bytes, 0))
                if entry is not None:
                    pos, first = entry[1], prev.base_offset + entry[0]
                for header, _ in scan_batches(prev.fd, pos, prev.size, first, verify_crc=False):
                    yield header
            seg = self._segments[-1]
            for header, _ in scan_batches(seg.fd, 0, seg.size, seg.base_offset, verify_crc=False):
                yield header
        except OSError as exc:
            raise LogStorageError(f"cannot read {self.directory}: {exc}") from exc

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """``(offset, timestamp)`` of the first record whose timestamp is >= ``timestamp``, found
        through the first batch whose max timestamp is >= it (like ListOffsets by time)."""
        self._check_open()
        for seg in self._segments:
            found = seg.find_timestamp(timestamp)
            if found is not None:
                return self._first_record(seg, *found, lambda ts: ts >= timestamp)
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """``(offset, timestamp)`` of the first record with the largest timestamp, if any."""
        self._check_open()
        best: Segment | None = None
        for seg in self._segments:
            if seg.max_timestamp >= 0 and (best is None or seg.max_timestamp > best.max_timestamp):
                best = seg
        if best is None:
            return None
        found = best.find_offset(best.tail.max_timestamp_offset)
        if found is None:
            return None
        top = best.max_timestamp
        return self._first_record(best, *found, lambda ts: ts >= top)

    def _first_record(
        self, seg: Segment, pos: int, header: BatchHeader, match: Callable[[int], bool]
    ) -> tuple[int, int]:
        """Refine a batch to its first matching record; fall back to the batch itself."""
        try:
            for record in decode_batch(seg.read_batch(pos, header.size)):
                if match(record.timestamp):
                    return record.offset, record.timestamp
        except (RecordError, ImportError, OSError):
            pass
        return header.base_offset, header.max_timestamp

    # -- maintenance -----------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> int:
        """Delete the oldest segments that retention allows (never the active one)."""
        self._check_open()
        stats = [
            SegmentStats(seg.base_offset, seg.size, seg.largest_timestamp())
            for seg in self._segments
        ]
        count = segments_to_delete(
            stats, now_ms, self.config.retention_ms, self.config.retention_bytes
        )
        for _ in range(count):
            seg = self._segments[0]
            try:
                seg.delete(self._closer, self.config.file_delete_delay_ms)
            except OSError as exc:
                raise LogStorageError(f"cannot delete segment {seg.log_path}: {exc}") from exc
            finally:
                if seg.fd < 0:
                    self._segments.pop(0)
        if count:
            try:
                remove_snapshots(self.directory, self.log_start_offset, self.log_end_offset)
            except OSError as exc:
                log.warning("%s: cannot remove old snapshots: %s", self.directory, exc)
        self._closer.reap()
        return count

    def flush(self, now_ms: int | None = None) -> None:
        """Force every appended byte to disk."""
        self._check_open()
        try:
            for seg in self._segments:
                if seg.unflushed:
                    seg.flush()
        except OSError as exc:
            raise LogStorageError(f"cannot flush {self.directory}: {exc}") from exc
        if now_ms is not None:
            self._last_flush_ms = now_ms

    def flush_due(self, now_ms: int) -> bool:
        """Whether an interval flush policy wants a flush now."""
        interval = self.config.flush.interval_ms
        if interval is None or not self.is_dirty:
            return False
        return self._last_flush_ms is None or now_ms - self._last_flush_ms >= interval

    def close(self, *, deleting: bool = False) -> None:
        """Flush, close the files and mark a clean shutdown. Idempotent.

        With ``deleting`` (the topic is being deleted) nothing is flushed or marked, and open
        read regions stay valid for ``file.delete.delay.ms``.
        """
        if self._closed:
            return
        self._closed = True
        error: OSError | None = None
        if not deleting:
            try:
                for seg in self._segments:
                    if seg.unflushed or seg is self._segments[-1]:
                        seg.flush(indexes=True)
            except OSError as exc:
                error = exc
        for seg in self._segments:
            seg.close(self._closer if deleting else None, self.config.file_delete_delay_ms)
        if not deleting and error is None:
            try:
                write_snapshot(self.directory, self.log_end_offset, self._producers)
                remove_snapshots(self.directory, self.log_start_offset, self.log_end_offset)
                os.close(os.open(self.directory / CLEAN_MARKER, os.O_WRONLY | os.O_CREAT, 0o644))
                fsync_path(self.directory)
            except OSError as exc:
                error = exc
        if self._owns_closer:
            self._closer.close_all()
        if error is not None:
            raise LogStorageError(f"cannot close {self.directory} cleanly: {error}") from error

    def _check_open(self) -> None:
        if self._closed:
            raise LogStorageError(f"log {self.directory} is closed")

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
