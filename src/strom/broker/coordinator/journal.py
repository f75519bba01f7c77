"""A tiny append-only journal of checksummed JSON records, used to persist coordinator state.

Each record on disk is ``length:u32be  crc32:u32be  payload`` where ``payload`` is ``length``
bytes of UTF-8 JSON (one object) and ``crc32`` is zlib's CRC-32 of the payload.

Guarantees:

* :func:`scan` returns the longest prefix of well-formed records and the byte offset where it
  ends; a torn or corrupt tail (short header, short payload, bad CRC, bad JSON) ends the scan.
  Everything after the first bad record is treated as lost, never as data.
* :func:`rewrite` replaces a file atomically (temp file, fsync, rename, fsync of the directory),
  so a crash leaves either the old or the new file, never a mix.
* :class:`JournalFile` is one such file opened for appending, with recovery and compaction.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from strom._fs import fsync_path

__all__ = ["MAX_RECORD_BYTES", "JournalFile", "encode", "rewrite", "scan"]

_HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 64 * 1024 * 1024


def encode(record: dict[str, Any]) -> bytes:
    payload = json.dumps(record, separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"journal record of {len(payload)} bytes is too large")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def scan(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Decode records from the start of ``data``; return them and the end of the last good one."""
    records: list[dict[str, Any]] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        end = start + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            record = json.loads(payload)
        except ValueError:
            break
        if not isinstance(record, dict):
            break
        records.append(record)
        pos = end
    return records, pos


def rewrite(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Atomically replace ``path`` with exactly ``records``; return the new file's size."""
    tmp = path.with_name(path.name + ".tmp")
    size = 0
    with open(tmp, "wb") as f:
        for record in records:
            chunk = encode(record)
            f.write(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
    return size


class JournalFile:
    """One journal file kept open for appending, as the coordinator's stores use it.

    * :meth:`open` reads the file, truncates a torn tail (and removes the temp file of an
      interrupted compaction), then opens it for appending.
    * :meth:`append` writes a whole record to the OS before it returns (a process crash loses
      nothing); with ``flush_always`` it also fsyncs, else :meth:`sync` and :meth:`close` do.
      A failed write is cut back off, so a later record never follows a partial one.
    * :meth:`maybe_compact` rewrites the file with the owner's live records once it has grown
      to ``compact_ratio`` times their size (and at least ``compact_min_bytes``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_always: bool = False,
        compact_min_bytes: int = 1 << 20,
        compact_ratio: float = 2.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.path = Path(path)
        self.flush_always = flush_always
        self._compact_min_bytes = compact_min_bytes
        self._compact_ratio = compact_ratio
        self._log = log or logging.getLogger("strom.broker.journal")
        self._file: io.FileIO | None = None
        self._size = 0
        self._dirty = False
        self._next_check = compact_min_bytes

    @property
    def size(self) -> int:
        return self._size

    def open(self) -> list[dict[str, Any]]:
        """Recover the file and open it for appending; return its well-formed records."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()  # an interrupted compaction; the journal itself is intact
        records: list[dict[str, Any]] = []
        if not self.path.exists():
            self.path.touch()
            fsync_path(self.path.parent)
        else:
            data = self.path.read_bytes()
            records, good = scan(data)
            if good < len(data):
                self._log.warning(
                    "%s: dropping %d bytes of torn or corrupt tail at offset %d",
                    self.path,
                    len(data) - good,
                    good,
                )
                with open(self.path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            self._size = good
        self._file = io.FileIO(self.path, "ab")
        return records

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: journal is closed")
        chunk = encode(record)
        view = memoryview(chunk)
        try:
            while view:  # an unbuffered write may be partial; finish the record
                view = view[self._file.write(view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._size)
            raise
        self._size += len(chunk)
        if self.flush_always:
            os.fsync(self._file.fileno())
        else:
            self._dirty = True

    def sync(self) -> None:
        """fsync what was appended since the last sync (a no-op when nothing was)."""
        if self._dirty and self._file is not None:
            os.fsync(self._file.fileno())
            self._dirty = False

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None

    def compact(self, live: Iterable[dict[str, Any]]) -> None:
        """Replace the file with exactly ``live`` (atomic: temp, fsync, rename)."""
        reopen = self._file is not None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._size = rewrite(self.path, live)
        self._dirty = False
        self._next_check = max(self._compact_min_bytes, int(self._size * self._compact_ratio))
        if reopen:
            self._file = io.FileIO(self.path, "ab")

    def maybe_compact(self, live: Callable[[], Iterable[dict[str, Any]]]) -> None:
        # Checked only when the file has grown by a factor since the last check, so the cost
        # of measuring the live set is amortised over many appends.
        if self._size < self._next_check:
            return
        if self._size > self._compact_ratio * sum(len(encode(r)) for r in live()):
            self.compact(live())
        else:
            self._next_check = max(self._compact_min_bytes, int(self._size * self._compact_ratio))
