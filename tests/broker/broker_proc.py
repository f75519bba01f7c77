"""Helpers for robustness tests: ``strom broker`` as a real subprocess, and raw Kafka requests.

:class:`BrokerProcess` runs the installed ``strom broker`` command on 127.0.0.1, waits until it
answers ApiVersions, and can ``kill -9`` and restart it on the same data directory and port.
Every process it starts is killed by ``close()`` (use it as a context manager).

:class:`RawClient` speaks the Kafka wire protocol over a plain socket with strom's own codec, so
tests can send exactly the bytes they want (malformed ones included) and decode the answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from strom.kafka.protocol.codec import Reader, codec_for
from strom.kafka.protocol.records import Record, batch_crc_ok, decode_batch, iter_batches

__all__ = [
    "BrokerProcess",
    "RawClient",
    "api_versions_ok",
    "decode_response",
    "fetch",
    "free_port",
    "produce",
    "read_log",
    "request_frame",
    "wait_until",
]

STROM = Path(sys.executable).with_name("strom")
HOST = "127.0.0.1"
_SIZE = struct.Struct(">i")


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``condition()`` until it returns a truthy value (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- raw protocol ----------------------------------------------------------------------------


def request_frame(
    name: str,
    version: int,
    body: dict[str, Any] | bytes,
    *,
    api_key: int,
    correlation_id: int = 1,
    client_id: str | None = "strom-test",
) -> bytes:
    """A whole request frame (size prefix, header, body) for ``<name>Request`` v``version``.

    ``body`` may be raw bytes, to send a body the codec would never produce.
    """
    codec = codec_for(f"{name}Request", version)
    header = codec_for("RequestHeader", 2 if codec.flexible else 1).encode(
        {
            "request_api_key": api_key,
            "request_api_version": version,
            "correlation_id": correlation_id,
            "client_id": client_id,
        }
    )
    payload = header + (body if isinstance(body, bytes) else codec.encode(body))
    return _SIZE.pack(len(payload)) + payload


class RawClient:
    """One blocking socket to a broker; every read has a deadline (a hang fails the test)."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.settimeout(timeout)
        self._correlation = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, n: int) -> bytes | None:
        """``n`` bytes, or None when the broker closed the connection first."""
        chunks, got = [], 0
        while got < n:
            try:
                chunk = self.sock.recv(n - got)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv_frame(self) -> bytes | None:
        """The next response frame without its size prefix, or None on close."""
        prefix = self.recv_exactly(4)
        if prefix is None:
            return None
        (size,) = _SIZE.unpack(prefix)
        assert 0 <= size < 1 << 30, f"response frame of {size} bytes"
        return self.recv_exactly(size)

    def request(
        self, name: str, version: int, body: dict[str, Any] | bytes, *, api_key: int
    ) -> dict[str, Any]:
        """Send a request and decode its response; fails if the broker closes instead."""
        self._correlation += 1
        self.send(
            request_frame(name, version, body, api_key=api_key, correlation_id=self._correlation)
        )
        response = self.recv_frame()
        assert response is not None, f"broker closed the connection on {name} v{version}"
        return decode_response(name, version, response, expect_correlation=self._correlation)

    def expect_close(self) -> None:
        """Assert that the broker closes the connection (and sends nothing before)."""
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return
        assert data == b"", f"expected the broker to close the connection, got {data!r}"


def decode_response(
    name: str, version: int, frame: bytes, *, expect_correlation: int | None = None
) -> dict[str, Any]:
    codec = codec_for(f"{name}Response", version)
    # ApiVersions answers always use header v0 so that clients can parse it before negotiating.
    header_version = 1 if codec.flexible and name != "ApiVersions" else 0
    header_codec = codec_for("ResponseHeader", header_version)
    reader = Reader(frame)
    header = header_codec.decode_prefix(reader)
    if expect_correlation is not None:
        assert header["correlation_id"] == expect_correlation, header
    return codec.decode(reader.buf[reader.pos :])


def api_versions_ok(address: tuple[str, int], timeout: float = 10.0) -> bool:
    """Whether a fresh connection gets a correct ApiVersions v3 answer."""
    with RawClient(address, timeout) as client:
        body = client.request(
            "ApiVersions",
            3,
            {"client_software_name": "strom-test", "client_software_version": "1"},
            api_key=18,
        )
    keys = {k["api_key"] for k in body["api_keys"]}
    return body["error_code"] == 0 and {0, 1, 3, 18} <= keys


def produce(
    client: RawClient,
    topic: str,
    partition: int,
    records: bytes,
    *,
    acks: int = -1,
) -> dict[str, Any]:
    """Produce v9 of ``records`` (raw batch bytes); the partition's answer."""
    body = client.request(
        "Produce",
        9,
        {
            "transactional_id": None,
            "acks": acks,
            "timeout_ms": 10_000,
            "topic_data": [
                {"name": topic, "partition_data": [{"index": partition, "records": records}]}
            ],
        },
        api_key=0,
    )
    [topic_answer] = body["responses"]
    [answer] = topic_answer["partition_responses"]
    return dict(answer)


def fetch(
    client: RawClient, topic: str, partition: int, offset: int, *, max_wait_ms: int = 0
) -> dict[str, Any]:
    """Fetch v12 from ``offset``; the partition's answer, its records as bytes."""
    body = client.request(
        "Fetch",
        12,
        {
            "max_wait_ms": max_wait_ms,
            "min_bytes": 1,
            "max_bytes": 8 << 20,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {
                            "partition": partition,
                            "fetch_offset": offset,
                            "partition_max_bytes": 8 << 20,
                        }
                    ],
                }
            ],
        },
        api_key=1,
    )
    [topic_answer] = body["responses"]
    [answer] = topic_answer["partitions"]
    answer = dict(answer)
    if answer["records"] is not None:
        answer["records"] = bytes(answer["records"])
    return answer


def read_log(address: tuple[str, int], topic: str, partition: int) -> list[Record]:
    """Every record of a partition through Fetch, asserting that the log is sound: each batch
    has a valid CRC-32C and offsets run contiguously from 0 to the high watermark."""
    out: list[Record] = []
    with RawClient(address) as client:
        while True:
            answer = fetch(client, topic, partition, len(out))
            assert answer["error_code"] == 0, answer
            data = answer["records"] or b""
            if not data:
                assert answer["high_watermark"] == len(out), answer
                return out
            before = len(out)
            for header, pos in iter_batches(data):
                assert batch_crc_ok(data, header, pos), f"{topic}-{partition}: bad CRC"
                records = [r for r in decode_batch(data, pos) if r.offset >= len(out)]
                offsets = [r.offset for r in records]
                assert offsets == list(range(len(out), len(out) + len(records))), (
                    f"{topic}-{partition}: offsets not contiguous at {len(out)}: {offsets[:5]}"
                )
                out.extend(records)
            assert len(out) > before, f"{topic}-{partition}: a fetch at {before} made no progress"


# -- broker subprocess ------------------------------------------------------------------------


class BrokerProcess:
    """``strom broker`` on ``127.0.0.1:port`` with its log in ``data_dir``.

    Output (both streams) is appended to ``log_path`` across restarts, so a test can look for
    tracebacks after the fact.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        log_path: Path,
        *,
        flush: str = "always",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path
        self.flush = flush
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        """Start the broker and return once a fresh connection gets an ApiVersions answer."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        args = [
            str(STROM),
            "broker",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"{HOST}:{self.port}",
            "--flush",
            self.flush,
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts}: {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        proc = self.proc

        def answering() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"broker exited with {proc.returncode} during start:\n{self.log_tail()}"
                )
            try:
                return api_versions_ok(self.address, timeout=2.0)
            except OSError:
                return False

        wait_until(answering, timeout, f"strom broker on port {self.port} to answer")
        return self

    def kill(self) -> None:
        """``kill -9`` the broker and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean shutdown); SIGKILL if it does not exit in time. Returns the code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TracebackRecorder(logging.Handler):
    """Keeps every log record that carries an exception: a broker failure, where a test expects
    only closed connections and error codes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)
