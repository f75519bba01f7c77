"""The aborted-transaction index of one segment: ``<base>.txnindex`` (Kafka's ``.txnindex`` idea).

File format (strom's own): a sequence of 24-byte big-endian entries ``(producer_id int64,
first_offset int64, last_offset int64)``, one per aborted transaction whose *abort marker* lies
in this segment; ``last_offset`` is the marker's offset and ``first_offset`` the offset of the
transaction's first batch on this partition (possibly in an older segment). There is no header;
a torn last entry (a crash mid-write) is dropped on load. The file is created with its first
entry, so a segment without aborts has none.

Invariants: entries are in marker order, so ``last_offset`` strictly increases; every entry's
``first_offset <= last_offset`` and ``last_offset`` lies in ``[segment base, segment end)``.

Why markers place the entry: a transaction overlapping a fetch starting at ``s`` has its marker
at an offset ``>= s``, so the segments from the one holding ``s`` onward hold every entry a
fetch may need, however old the transaction's first offset (AutoMQ #754 missed those).

Durability: like the offset index this file is not fsynced on the append path. A sealed
segment's file is fsynced when the segment is rolled (before the producer-state snapshot that
recovery starts from is written), the active one's on clean close; after a crash, recovery
replays the log from that snapshot and rewrites every entry at or after it
(:meth:`TxnIndex.truncate_from` then :meth:`TxnIndex.append`).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, NamedTuple

from strom.broker.log.fileio import pwrite_all

__all__ = ["AbortedTxn", "TxnIndex", "collect_aborted"]

log = logging.getLogger("strom.broker.log")

_ENTRY: Final = struct.Struct(">qqq")


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int  # the abort marker's offset


class TxnIndex:
    """Entries in memory (always complete) mirrored to a file (opened only while written).

    A failed file write keeps the entry in memory and marks the file stale; the next
    :meth:`flush` rewrites it whole (and recovery would rebuild it after a crash).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[AbortedTxn] = []
        self._lasts: list[int] = []  # last_offset of each entry, for bisect
        self._fd = -1
        self._stale = False
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        whole = len(data) - len(data) % _ENTRY.size
        for pid, first, last in _ENTRY.iter_unpack(memoryview(data)[:whole]):
            if first > last or (self._lasts and last <= self._lasts[-1]):
                log.warning("%s: entry out of order; the rest of the file is ignored", path)
                self._stale = True
                break
            self.entries.append(AbortedTxn(pid, first, last))
            self._lasts.append(last)
        if whole != len(data):
            self._stale = True  # a torn last entry: rewritten at the next flush

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def max_span(self) -> int:
        return max((e.last_offset - e.first_offset for e in self.entries), default=0)

    def append(self, entry: AbortedTxn) -> None:
        if self._lasts and entry.last_offset <= self._lasts[-1]:
            raise ValueError(f"{self.path}: entry {entry} is not after {self.entries[-1]}")
        self.entries.append(entry)
        self._lasts.append(entry.last_offset)
        if self._stale:
            return
        try:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            pwrite_all(self._fd, _ENTRY.pack(*entry), (len(self.entries) - 1) * _ENTRY.size)
        except OSError as exc:
            log.warning("%s: cannot write (kept in memory, rewritten later): %s", self.path, exc)
            self._stale = True

    def truncate_from(self, offset: int) -> None:
        """Drop the entries whose marker is at or after ``offset`` (memory and file)."""
        keep = bisect.bisect_left(self._lasts, offset)
        if keep == len(self.entries) and not self._stale:
            return
        del self.entries[keep:]
        del self._lasts[keep:]
        self._stale = True
        self.flush()

    def since(self, offset: int) -> Sequence[AbortedTxn]:
        """Entries whose marker is at or after ``offset``, in marker order."""
        return self.entries[bisect.bisect_left(self._lasts, offset) :]

    def flush(self) -> None:
        """Make the file match memory and force it to disk (an empty index has no file)."""
        if self._stale:
            self.close()
            if not self.entries:
                self.path.unlink(missing_ok=True)
                self._stale = False
                return
            data = b"".join(_ENTRY.pack(*e) for e in self.entries)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                pwrite_all(fd, data, 0)
                os.ftruncate(fd, len(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._stale = False
        elif self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file; the entries stay in memory (sealed segments)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def collect_aborted(
    indexes: Iterable[TxnIndex], start: int, end: int, max_span: int
) -> list[tuple[int, int]]:
    """``(producer_id, first_offset)`` of every aborted transaction overlapping
    ``[start, end)``, i.e. ``last_offset >= start`` and ``first_offset < end``.

    ``indexes`` are the segments from the one holding ``start`` onward, in order; ``max_span``
    bounds ``last_offset - first_offset`` over all of them, so the search stops at the first
    marker at or after ``end + max_span`` (every later one starts at or after ``end``).
    """
    out: list[tuple[int, int]] = []
    stop = end + max_span
    for index in indexes:
        for entry in index.since(start):
            if entry.last_offset >= stop:
                return out
            if entry.first_offset < end:
                out.append((entry.producer_id, entry.first_offset))
    return out
