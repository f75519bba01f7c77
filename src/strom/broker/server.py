"""The asyncio server: moves bytes between sockets and :func:`dispatch`, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import IO, TYPE_CHECKING, cast

from strom.broker.handlers.dispatch import Close, dispatch
from strom.broker.log.fileio import pread_all
from strom.kafka.protocol.codec import FileRegion
from strom.kafka.protocol.framing import FrameTooLarge, frame_size

if TYPE_CHECKING:
    from strom.broker.state import BrokerState

__all__ = ["Server"]

log = logging.getLogger("strom.broker")

_SENDFILE_MIN = 64 * 1024  # smaller regions are cheaper to pread and write


class _Fd:
    """The file-object face ``loop.sendfile`` needs around a borrowed descriptor."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def seek(self, offset: int, whence: int = 0) -> int:
        return offset  # reads use explicit offsets; the shared descriptor's position is unused


class Server:
    """Accepts Kafka clients on one listener and serves each connection's requests in order."""

    def __init__(self, state: BrokerState, host: str, port: int, max_request_bytes: int) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.max_request_bytes = max_request_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=1 << 20, reuse_address=True
        )
        sock = self._server.sockets[0]
        host, port = sock.getsockname()[:2]
        self.port = port
        return host, port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        client_host = str(peer[0]) if peer else "unknown"
        try:
            await self._requests(reader, writer, client_host)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection from %s failed", client_host)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_host: str
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            prefix = await reader.readexactly(4)
            try:
                size = frame_size(prefix, self.max_request_bytes)
            except FrameTooLarge as exc:
                log.warning("closing connection from %s: %s", client_host, exc)
                return
            frame = await reader.readexactly(size)
            outcome = await dispatch(self.state, frame, client_host)
            if isinstance(outcome, Close):
                log.warning("closing connection from %s: %s", client_host, outcome.reason)
                return
            if outcome is None:
                continue
            for part in outcome:
                if isinstance(part, bytes):
                    writer.write(part)
                elif part.length < _SENDFILE_MIN:
                    _write_region(writer, part)
                else:
                    await self._sendfile(loop, writer, part)
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()

    @staticmethod
    async def _sendfile(
        loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter, region: FileRegion
    ) -> None:
        # The peer may hang up (or the server start closing) while a fetch long-polls; then
        # loop.sendfile raises RuntimeError("Transport is closing"). That is a closed connection,
        # not a broker failure: report it as one so it is not logged as a crash.
        if writer.transport.is_closing():
            raise ConnectionError("connection closed before the response was sent")
        try:
            sent = await loop.sendfile(
                writer.transport,
                cast(IO[bytes], _Fd(region.fd)),
                region.offset,
                region.length,
                fallback=False,
            )
        except asyncio.SendfileNotAvailableError:
            # os.sendfile failed before sending a byte: the peer reset the connection (EPIPE,
            # ECONNRESET), or this file cannot be sent that way. A plain write is right in both
            # cases; on a dead connection it is dropped and the next read ends the connection.
            _write_region(writer, region)
            return
        if sent != region.length:
            raise ConnectionError(f"sendfile sent {sent} of {region.length} bytes")


def _write_region(writer: asyncio.StreamWriter, region: FileRegion) -> None:
    """Write a file region through the transport. The response's size prefix already counts
    ``region.length`` bytes: a short read would desynchronise the stream, so it ends it."""
    data = pread_all(region.fd, region.length, region.offset)
    if len(data) != region.length:
        message = f"read {len(data)} of {region.length} bytes of a log segment"
        log.error("closing a connection: %s", message)
        raise ConnectionError(message)
    writer.write(data)
