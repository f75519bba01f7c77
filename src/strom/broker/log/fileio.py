"""Small file helpers shared by the log modules: full reads/writes, durable renames, and the
deferred closing of deleted segments' descriptors."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from strom._fs import fsync_path

__all__ = ["DeferredCloser", "atomic_write", "pread_all", "pwrite_all"]

_CHUNK: Final = 1 << 20


def pread_all(fd: int, size: int, pos: int) -> bytes:
    """Up to ``size`` bytes at ``pos``; fewer only at end of file."""
    parts = []
    while size > 0:
        part = os.pread(fd, min(size, _CHUNK), pos)
        if not part:
            break
        parts.append(part)
        pos += len(part)
        size -= len(part)
    return b"".join(parts)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, pos: int) -> None:
    """Write all of ``data`` at ``pos`` (a short write is retried; the next one raises ENOSPC)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_path(path.parent)


class DeferredCloser:
    """Closes descriptors of deleted segment files only after a grace period.

    A fetch hands out ``(fd, position, length)`` regions that the server sends later with
    ``sendfile``; closing the fd at deletion time could make that send fail or, once the number
    is reused, send another file's bytes. Deleted files are unlinked at once (their space is
    freed when the fd closes) and their fds stay open for ``delay_ms`` (Kafka's
    ``file.delete.delay.ms``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def defer(self, fd: int, delay_ms: int) -> None:
        self._pending.append((self._clock() + delay_ms / 1000, fd))
        self.reap()

    def reap(self) -> int:
        """Close the descriptors whose grace period is over; return how many."""
        now = self._clock()
        due = [fd for deadline, fd in self._pending if deadline <= now]
        self._pending = [(d, fd) for d, fd in self._pending if d > now]
        for fd in due:
            _close_quietly(fd)
        return len(due)

    def close_all(self) -> None:
        pending, self._pending = self._pending, []
        for _, fd in pending:
            _close_quietly(fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
