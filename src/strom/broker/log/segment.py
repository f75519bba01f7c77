"""One log segment: ``<base>.log`` holding batches as received, plus its two sparse indexes and
its aborted-transaction index (:mod:`strom.broker.log.txnindex`).

Invariants between calls (in memory; the file agrees after a successful append or recovery):

* the log file's first ``size`` bytes are whole v2 batches with contiguous offsets
  ``[base_offset, next_offset)``; nothing past ``size`` is ever served;
* every offset-index entry names the start of a batch below ``size``; every time-index entry
  satisfies :class:`~strom.broker.log.index.TimeIndex`'s invariant;
* ``max_timestamp`` is the largest batch max timestamp (-1 when none), carried first by the batch
  at ``max_timestamp_offset``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import crc32c

from strom._fs import fsync_path
from strom.broker.log.fileio import DeferredCloser, pread_all, pwrite_all
from strom.broker.log.index import OffsetIndex, TimeIndex
from strom.broker.log.txnindex import TxnIndex
from strom.kafka.protocol.records import HEADER_SIZE, BatchHeader, parse_header

__all__ = ["CLEAN_MARKER", "Segment", "open_segments", "scan_batches", "segment_name"]

log = logging.getLogger("strom.broker.log")

CLEAN_MARKER: Final = ".clean-shutdown"
_SEGMENT_FILE: Final = re.compile(r"^(\d{20})\.(log|index|timeindex|txnindex)$")
_CHUNK: Final = 1 << 16
_MIN_BATCH_LENGTH: Final = HEADER_SIZE - 12
_CRC_START: Final = 21


def segment_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def scan_batches(
    fd: int, start: int, end: int, first_offset: int | None, *, verify_crc: bool
) -> Iterator[tuple[BatchHeader, int]]:
    """Yield ``(header, position)`` of the valid batches in ``[start, end)``, in file order.

    Stops silently at the first batch that is partial, malformed (magic, length), out of offset
    sequence (when ``first_offset`` is given, each batch must start where the previous ended) or,
    with ``verify_crc``, fails its CRC. Callers detect that stop by where the last batch ends.
    """
    buf, buf_pos, pos, expected = b"", start, start, first_offset
    while end - pos >= HEADER_SIZE:
        if pos + HEADER_SIZE > buf_pos + len(buf):
            buf, buf_pos = os.pread(fd, min(_CHUNK, end - pos), pos), pos
            if len(buf) < HEADER_SIZE:
                return
        rel = pos - buf_pos
        h = parse_header(buf, rel)
        size = 12 + h.batch_length
        if h.magic != 2 or h.batch_length < _MIN_BATCH_LENGTH or pos + size > end:
            return
        if h.last_offset_delta < 0 or (expected is not None and h.base_offset != expected):
            return
        if verify_crc:
            if rel + size <= len(buf):
                body: bytes | memoryview = memoryview(buf)[rel + _CRC_START : rel + size]
            else:
                body = pread_all(fd, size - _CRC_START, pos + _CRC_START)
            if len(body) != size - _CRC_START or crc32c.crc32c(body) != h.crc:
                return
        yield h, pos
        expected = h.base_offset + h.last_offset_delta + 1
        pos += size


@dataclass(slots=True)
class _Tail:
    """Counters that advance with each batch; copied while planning an append."""

    next_offset: int
    max_timestamp: int = -1
    max_timestamp_offset: int = -1
    bytes_since_index: int = 0


class Segment:
    """A segment's files and in-memory state. Not thread-safe."""

    def __init__(self, directory: Path, base_offset: int) -> None:
        self.base_offset = base_offset
        self.log_path = directory / segment_name(base_offset, ".log")
        self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self.index = OffsetIndex(directory / segment_name(base_offset, ".index"))
            self.time_index = TimeIndex(directory / segment_name(base_offset, ".timeindex"))
            self.txn_index = TxnIndex(directory / segment_name(base_offset, ".txnindex"))
        except BaseException:
            os.close(self.fd)
            raise
        self.size = 0
        self.tail = _Tail(base_offset)
        self.rolling_base_ms: int | None = None  # broker time of the first append, for segment.ms
        self.unflushed = False
        self._tail_dirty = False  # a failed truncation left bytes past ``size`` in the file

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, base_offset: int, *, recover: bool, index_interval_bytes: int
    ) -> Segment:
        """Open (creating if absent). With ``recover`` every batch's CRC is checked, the file is
        cut at the first bad one and both indexes are rebuilt; otherwise the indexes are trusted
        after a consistency check, and a failed check falls back to recovery."""
        seg = cls(directory, base_offset)
        try:
            seg.size = os.fstat(seg.fd).st_size
            if recover or not seg._load_trusted(index_interval_bytes):
                seg._recover(index_interval_bytes)
            if seg.size:
                first = parse_header(pread_all(seg.fd, HEADER_SIZE, 0))
                seg.rolling_base_ms = first.max_timestamp
                if first.max_timestamp < 0:
                    seg.rolling_base_ms = int(os.fstat(seg.fd).st_mtime * 1000)
        except BaseException:
            seg.close()
            raise
        return seg

    def _load_trusted(self, interval: int) -> bool:
        """Take the indexes as they are, scanning headers only from the last offset-index entry.

        Fails (so the caller rebuilds) when an index is inconsistent, names a position or offset
        past the data, misses the entries the scanned tail should have earned, or when the time
        index is missing while the offset index is not.
        """
        index, times = self.index, self.time_index
        if not (index.consistent() and times.consistent()) or len(times) > len(index):
            return False
        last, t_last = index.last(), times.last()
        if last is not None and (last[1] >= self.size or t_last is None or t_last[1] > last[0]):
            return False
        rel, pos = last if last is not None else (0, 0)
        tail = _Tail(self.base_offset + rel)
        if t_last is not None:
            tail.max_timestamp, tail.max_timestamp_offset = t_last[0], self.base_offset + t_last[1]
        missing: list[tuple[int, int]] = []
        end = pos
        for h, p in scan_batches(self.fd, pos, self.size, tail.next_offset, verify_crc=False):
            self._plan(tail, h, p, interval, missing, missing)
            end = p + h.size
        if end != self.size or missing or (last is not None and end == pos):
            return False
        self.tail = tail
        return True

    def _recover(self, index_interval_bytes: int) -> None:
        file_size = self.size
        self.index.truncate(0)
        self.time_index.truncate(0)
        tail = _Tail(self.base_offset)
        entries: list[tuple[int, int]] = []
        time_entries: list[tuple[int, int]] = []
        end = 0
        for h, p in scan_batches(self.fd, 0, file_size, self.base_offset, verify_crc=True):
            self._plan(tail, h, p, index_interval_bytes, entries, time_entries)
            end = p + h.size
        if end < file_size:
            log.warning(
                "%s: truncating %d bytes after offset %d (torn or corrupt tail)",
                self.log_path,
                file_size - end,
                tail.next_offset,
            )
            os.ftruncate(self.fd, end)
            os.fsync(self.fd)
        self.index.append(entries)
        self.time_index.append(time_entries)
        self.index.flush()
        self.time_index.flush()
        self.size = end
        self.tail = tail

    # -- appending -------------------------------------------------------------------------

    def _plan(
        self,
        tail: _Tail,
        h: BatchHeader,
        pos: int,
        interval: int,
        entries: list[tuple[int, int]],
        time_entries: list[tuple[int, int]],
    ) -> None:
        """Advance ``tail`` past batch ``h`` at ``pos`` and collect the index entries it earns."""
        if tail.bytes_since_index > interval:
            entries.append((h.base_offset - self.base_offset, pos))
            t_last = time_entries[-1] if time_entries else self.time_index.last()
            if h.max_timestamp > tail.max_timestamp:
                newest, at = h.max_timestamp, h.base_offset
            else:
                newest, at = tail.max_timestamp, tail.max_timestamp_offset
            if newest > (t_last[0] if t_last is not None else -1):
                time_entries.append((newest, at - self.base_offset))
            tail.bytes_since_index = 0
        _advance(tail, h)

    def append(
        self,
        data: bytes | bytearray,
        headers: list[BatchHeader],
        now_ms: int,
        *,
        index_interval_bytes: int,
        sync: bool,
    ) -> None:
        """Write whole batches (offsets already assigned, starting at ``next_offset``).

        All or nothing: on an OSError the file and indexes are cut back, in-memory state is
        unchanged, and the error propagates.
        """
        if self._tail_dirty:
            os.ftruncate(self.fd, self.size)
            self._tail_dirty = False
        t = self.tail
        tail = _Tail(t.next_offset, t.max_timestamp, t.max_timestamp_offset, t.bytes_since_index)
        entries: list[tuple[int, int]] = []
        time_entries: list[tuple[int, int]] = []
        pos = self.size
        for h in headers:
            self._plan(tail, h, pos, index_interval_bytes, entries, time_entries)
            pos += h.size
        counts = len(self.index), len(self.time_index)
        try:
            pwrite_all(self.fd, data, self.size)
            self.index.append(entries)
            self.time_index.append(time_entries)
            if sync:
                os.fdatasync(self.fd)
        except OSError:
            self._rollback(*counts)
            raise
        self.size = pos
        self.tail = tail
        self.unflushed = not sync
        if self.rolling_base_ms is None:
            self.rolling_base_ms = now_ms

    def _rollback(self, index_count: int, time_count: int) -> None:
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            self._tail_dirty = True
        with contextlib.suppress(OSError):
            self.index.truncate(index_count)
        with contextlib.suppress(OSError):
            self.time_index.truncate(time_count)

    # -- reading ---------------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        return self.tail.next_offset

    @property
    def max_timestamp(self) -> int:
        return self.tail.max_timestamp

    def _floor(self, offset: int) -> tuple[int, int]:
        """(position, offset) of an indexed batch start at or before ``offset``'s batch."""
        entry = self.index.floor(offset - self.base_offset)
        if entry is None:
            return 0, self.base_offset
        return entry[1], self.base_offset + entry[0]

    def find_offset(self, offset: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last offset is >= ``offset``."""
        pos, first = self._floor(max(offset, self.base_offset))
        for h, p in scan_batches(self.fd, pos, self.size, first, verify_crc=False):
            if h.last_offset >= offset:
                return p, h
        return None

    def find_timestamp(self, timestamp: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose max timestamp is >= ``timestamp``."""
        if self.tail.max_timestamp < timestamp:
            return None
        entry = self.time_index.lower(timestamp)
        pos, first = self._floor(self.base_offset + (entry[1] if entry else 0))
        for h, p in scan_batches(self.fd, pos, self.size, first, verify_crc=False):
            if h.max_timestamp >= timestamp:
                return p, h
        return None

    def region_length(
        self, pos: int, first_size: int, max_bytes: int, stop: int | None = None
    ) -> int:
        """Bytes of whole batches from ``pos`` within ``max_bytes``, but at least the first,
        and none at or past byte position ``stop`` (a batch start; default: the end)."""
        stop = self.size if stop is None else stop
        limit = min(pos + max(max_bytes, first_size), stop)
        if limit >= stop:
            return stop - pos
        end = pos + first_size
        jump = self.index.floor_value(limit)
        start, first = (jump[1], self.base_offset + jump[0]) if jump else (end, None)
        if start <= end:
            start, first = end, None
        else:
            end = start
        for h, p in scan_batches(self.fd, start, limit, first, verify_crc=False):
            end = p + h.size
        return end - pos

    def offset_at(self, pos: int) -> int:
        """The base offset of the batch starting at ``pos`` (the next offset at the end)."""
        if pos >= self.size:
            return self.next_offset
        return int(struct.unpack(">q", pread_all(self.fd, 8, pos))[0])

    def read_batch(self, pos: int, size: int) -> bytes:
        return pread_all(self.fd, size, pos)

    def largest_timestamp(self) -> int:
        """Max record timestamp, or the file's modification time when batches carry none."""
        if self.tail.max_timestamp >= 0:
            return self.tail.max_timestamp
        return int(os.fstat(self.fd).st_mtime * 1000)

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self, *, indexes: bool = False) -> None:
        os.fdatasync(self.fd)
        if indexes:
            self.index.flush()
            self.time_index.flush()
            self.txn_index.flush()
        self.unflushed = False

    def seal(self, *, sync: bool) -> None:
        """This segment will not be appended to again: optionally force it to disk, then close
        the index files (their entries stay in memory), leaving one fd per sealed segment."""
        if sync:
            self.flush(indexes=True)
        self.index.close()
        self.time_index.close()
        self.txn_index.close()

    def close(self, closer: DeferredCloser | None = None, delay_ms: int = 0) -> None:
        """Close the files; with ``closer`` the log fd stays open for ``delay_ms`` more."""
        self.index.close()
        self.time_index.close()
        self.txn_index.close()
        if self.fd >= 0:
            if closer is not None:
                closer.defer(self.fd, delay_ms)
            else:
                os.close(self.fd)
            self.fd = -1

    def delete(self, closer: DeferredCloser, delay_ms: int) -> None:
        """Unlink the files (log first: an index without its log is discarded on open)."""
        self.log_path.unlink(missing_ok=True)
        self.index.path.unlink(missing_ok=True)
        self.time_index.path.unlink(missing_ok=True)
        self.txn_index.delete()
        self.close(closer, delay_ms)


def _advance(tail: _Tail, h: BatchHeader) -> None:
    if h.max_timestamp > tail.max_timestamp:
        tail.max_timestamp, tail.max_timestamp_offset = h.max_timestamp, h.base_offset
    tail.bytes_since_index += h.size
    tail.next_offset = h.next_offset


def open_segments(directory: Path, index_interval_bytes: int) -> list[Segment]:
    """Open a partition directory's segments in offset order (an empty first one if none).

    Stray files go first: ``*.deleted`` and ``*.tmp`` leftovers, and the indexes of a segment
    whose log file is gone (an interrupted deletion). The active segment is recovered unless
    the directory holds a clean-shutdown marker, which is then removed durably.
    """
    marker = directory / CLEAN_MARKER
    clean = marker.exists()
    logs: set[int] = set()
    others: list[tuple[int, Path]] = []
    for path in directory.iterdir():
        if path.name.endswith((".deleted", ".tmp")) and path.is_file():
            path.unlink(missing_ok=True)
        elif m := _SEGMENT_FILE.match(path.name):
            if m[2] == "log":
                logs.add(int(m[1]))
            else:
                others.append((int(m[1]), path))
    for base, path in others:
        if base not in logs:
            path.unlink()  # the index of a segment whose deletion was interrupted
    bases = sorted(logs) or [0]
    segments: list[Segment] = []
    try:
        for i, base in enumerate(bases):
            recover = i == len(bases) - 1 and not clean
            segments.append(
                Segment.open(
                    directory,
                    base,
                    recover=recover,
                    index_interval_bytes=index_interval_bytes,
                )
            )
        for seg in segments[:-1]:
            seg.seal(sync=False)
        if clean:
            marker.unlink()
        fsync_path(directory)
        fsync_path(directory.parent)
    except BaseException:
        for seg in segments:
            seg.close()
        raise
    for prev, nxt in itertools.pairwise(segments):
        if prev.next_offset != nxt.base_offset:
            log.warning(
                "%s: segment %d ends at offset %d but the next starts at %d",
                directory,
                prev.base_offset,
                prev.next_offset,
                nxt.base_offset,
            )
    return segments
