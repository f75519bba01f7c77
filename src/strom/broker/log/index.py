"""Sparse per-segment indexes, kept in memory and appended to their files.

Both indexes are arrays of fixed-size big-endian entries ``(key, value)`` whose keys strictly
increase. The offset index maps a batch's offset relative to the segment base (uint32) to the
batch's byte position in the segment file (uint32); the time index maps the segment's largest
timestamp so far (int64) to the relative offset of the batch that carried it (uint32).

An index is a cache: recovery rebuilds it from the segment file whenever it is missing or fails
:meth:`SparseIndex.consistent`, so index files need no fsync on the append path.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
from array import array
from pathlib import Path

from strom.broker.log.fileio import pread_all, pwrite_all

__all__ = ["OffsetIndex", "SparseIndex", "TimeIndex"]


class SparseIndex:
    """An append-only sorted map from int keys to int values, mirrored to a file."""

    _entry: struct.Struct
    _key_type: str
    _value_type: str

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.keys: array[int] = array(self._key_type)
        self.values: array[int] = array(self._value_type)
        size = os.fstat(self._fd).st_size
        data = pread_all(self._fd, size - size % self._entry.size, 0)
        for key, value in self._entry.iter_unpack(data):
            self.keys.append(key)
            self.values.append(value)
        if size % self._entry.size:
            os.ftruncate(self._fd, len(data))  # a torn last entry

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def file_size(self) -> int:
        return len(self.keys) * self._entry.size

    def last(self) -> tuple[int, int] | None:
        return (self.keys[-1], self.values[-1]) if self.keys else None

    def floor(self, key: int) -> tuple[int, int] | None:
        """The entry with the largest key <= ``key``, if any."""
        i = bisect.bisect_right(self.keys, key)
        return (self.keys[i - 1], self.values[i - 1]) if i else None

    def lower(self, key: int) -> tuple[int, int] | None:
        """The entry with the largest key < ``key``, if any."""
        i = bisect.bisect_left(self.keys, key)
        return (self.keys[i - 1], self.values[i - 1]) if i else None

    def consistent(self) -> bool:
        """Keys strictly increase and values never decrease."""
        k, v = self.keys, self.values
        return all(k[i] < k[i + 1] and v[i] <= v[i + 1] for i in range(len(k) - 1))

    def append(self, entries: list[tuple[int, int]]) -> None:
        """Write ``entries`` (keys above the current last) to the file, then to memory.

        On an OSError the file is cut back and memory is unchanged; the error propagates.
        """
        if not entries:
            return
        data = b"".join(self._entry.pack(k, v) for k, v in entries)
        old = self.file_size
        try:
            pwrite_all(self._fd, data, old)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, old)
            raise
        for k, v in entries:
            self.keys.append(k)
            self.values.append(v)

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` entries (memory first, so it holds even if the file
        cannot be cut: later appends overwrite from ``file_size``, recovery drops the rest)."""
        del self.keys[count:]
        del self.values[count:]
        os.ftruncate(self._fd, count * self._entry.size)

    def floor_value(self, value: int) -> tuple[int, int] | None:
        """The last entry whose value is <= ``value`` (values are sorted too)."""
        i = bisect.bisect_right(self.values, value)
        return (self.keys[i - 1], self.values[i - 1]) if i else None

    def flush(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file; the entries stay in memory for lookups (sealed segments)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OffsetIndex(SparseIndex):
    """Relative batch base offset -> byte position of that batch in the segment file."""

    _entry = struct.Struct(">II")
    _key_type = "I"
    _value_type = "I"

    def consistent(self) -> bool:
        # Positions must strictly increase too: each entry names a different batch.
        v = self.values
        return super().consistent() and all(v[i] < v[i + 1] for i in range(len(v) - 1))


class TimeIndex(SparseIndex):
    """Largest timestamp so far -> relative offset of the batch that carried it.

    Invariant used by lookups: every batch at or before an entry's offset has a max timestamp
    <= the entry's timestamp.
    """

    _entry = struct.Struct(">qI")
    _key_type = "q"
    _value_type = "I"
