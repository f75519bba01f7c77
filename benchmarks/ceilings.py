"""The machine's own ceilings, measured in the same run as the brokers: loopback TCP and disk."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from typing import Any

__all__ = ["disk_write", "loopback_tcp"]

_CHUNK = 1 << 20


def loopback_tcp(total_bytes: int = 2 << 30) -> dict[str, Any]:
    """One TCP stream over 127.0.0.1, 1 MiB writes, a reader thread draining it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    received = 0

    def drain() -> None:
        nonlocal received
        conn, _ = server.accept()
        buf = bytearray(_CHUNK)
        with conn:
            while True:
                n = conn.recv_into(buf)
                if not n:
                    return
                received += n

    reader = threading.Thread(target=drain)
    reader.start()
    payload = os.urandom(_CHUNK)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as client:
        sent = 0
        while sent < total_bytes:
            client.sendall(payload)
            sent += len(payload)
    reader.join()
    wall = time.perf_counter() - t0
    server.close()
    return {
        "benchmark": "ceiling.loopback_tcp",
        "bytes": received,
        "wall_s": wall,
        "mb_per_s": received / wall / 1e6,
    }


def disk_write(
    directory: str | None = None, total_bytes: int = 512 << 20, sync_every: int | None = None
) -> dict[str, Any]:
    """Sequential 1 MiB writes; fdatasync at the end, or every ``sync_every`` bytes."""
    payload = os.urandom(_CHUNK)
    fd, path = tempfile.mkstemp(prefix="strom-ceiling-", dir=directory)
    try:
        t0 = time.perf_counter()
        written = since_sync = 0
        while written < total_bytes:
            written += os.write(fd, payload)
            since_sync += _CHUNK
            if sync_every is not None and since_sync >= sync_every:
                os.fdatasync(fd)
                since_sync = 0
        os.fdatasync(fd)
        wall = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    name = "ceiling.disk_write_fdatasync" + (f"_every_{sync_every >> 10}KiB" if sync_every else "")
    return {"benchmark": name, "bytes": written, "wall_s": wall, "mb_per_s": written / wall / 1e6}
