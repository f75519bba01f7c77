"""A tiny append-only journal of checksummed JSON records, used to persist coordinator state.

Each record on disk is ``length:u32be  crc32:u32be  payload`` where ``payload`` is ``length``
bytes of UTF-8 JSON (one object) and ``crc32`` is zlib's CRC-32 of the payload.

Guarantees:

* :func:`scan` returns the longest prefix of well-formed records and the byte offset where it
  ends; a torn or corrupt tail (short header, short payload, bad CRC, bad JSON) ends the scan.
  Everything after the first bad record is treated as lost, never as data.
* :func:`rewrite` replaces a file atomically (temp file, fsync, rename, fsync of the directory),
  so a crash leaves either the old or the new file, never a mix.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["MAX_RECORD_BYTES", "encode", "fsync_dir", "rewrite", "scan"]

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


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    fsync_dir(path.parent)
    return size
