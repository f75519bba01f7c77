"""The driver's worker processes, supervised by hand: a pipe and a sentinel per worker.

Not ``ProcessPoolExecutor``: a worker killed there breaks the whole pool. Here a dead worker is
one event (its sentinel becomes ready, its pipe reads EOF): the driver fails its task's attempt
and starts a replacement, and every other worker goes on.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from strom.batch.worker import Reply, worker_main

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(eq=False)
class Worker:
    process: BaseProcess
    conn: Connection
    busy: Any = None
    """What the driver gave it (None: idle)."""
    tasks_run: int = field(default=0)

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


@dataclass(frozen=True)
class Event:
    """A worker answered (``reply``), or died (``reply`` None, ``exitcode`` set)."""

    worker: Worker
    reply: Reply | None
    exitcode: int | None = None


_JEMALLOC = "dirty_decay_ms:100,muzzy_decay_ms:0"
"""Polars' allocator (jemalloc) returns freed pages after 0.1 s instead of ~10 s, so a worker's
RSS falls back between tasks (measured: 154 -> 101 MiB after a 15 MB map task). Not at once
(``dirty_decay_ms:0``): that returns and refaults pages inside a task, which made a TPC-H Q1
map task 1.9x slower (0.32 s against 0.17 s for 35 MB; 0.1 s: 0.16 s, 3 MiB more resident)."""


@contextmanager
def _environment(threads: int) -> Iterator[None]:
    """Workers start with Polars limited to ``threads`` and its allocator returning memory
    promptly (both read once, when Polars loads)."""
    settings = {"POLARS_MAX_THREADS": str(threads), "_RJEM_MALLOC_CONF": _JEMALLOC}
    old = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


class Pool:
    """``count`` workers of the jobs in file ``jobs_file`` (cloudpickle bytes: passed by path,
    since a large argument would make each start wait for its child to boot)."""

    def __init__(self, count: int, jobs_file: str, threads: int) -> None:
        self._jobs_file = jobs_file
        self._threads = threads
        self.workers: list[Worker] = []
        for _ in range(count):
            self.start()

    def start(self) -> Worker:
        driver_end, worker_end = _SPAWN.Pipe(duplex=True)
        process = _SPAWN.Process(
            target=worker_main,
            args=(worker_end, self._jobs_file),
            daemon=True,
            name="strom-worker",
        )
        with _environment(self._threads):
            process.start()
        worker_end.close()
        worker = Worker(process, driver_end)
        self.workers.append(worker)
        return worker

    def idle(self) -> list[Worker]:
        return [w for w in self.workers if w.busy is None]

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.busy is not None]

    def send(self, worker: Worker, what: Any, message: Any) -> None:
        worker.busy = what
        with suppress(BrokenPipeError, OSError):  # it died: its sentinel reports it
            worker.conn.send(message)

    def wait(self, timeout: float) -> list[Event]:
        handles: list[Any] = [w.conn for w in self.workers]
        handles += [w.process.sentinel for w in self.workers]
        ready = set(wait(handles, timeout))
        events: list[Event] = []
        for worker in list(self.workers):
            if worker.conn in ready:
                try:
                    events.append(Event(worker, worker.conn.recv()))
                    continue
                except (EOFError, OSError):
                    pass
                worker.process.join(5)
            signalled = worker.conn in ready or worker.process.sentinel in ready
            if signalled and not worker.process.is_alive():
                self._remove(worker)
                events.append(Event(worker, None, worker.process.exitcode))
        return events

    def retire(self, worker: Worker) -> None:
        """Stop an idle worker (e.g. one whose memory grew past its share)."""
        self._remove(worker)
        with suppress(BrokenPipeError, OSError):
            worker.conn.send(None)
        worker.process.join(10)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()

    def close(self) -> None:
        """Stop every worker: idle ones are asked to (all at once), busy ones killed."""
        workers, self.workers = self.workers, []
        for worker in workers:
            if worker.busy is None:
                with suppress(BrokenPipeError, OSError):
                    worker.conn.send(None)
            elif worker.process.is_alive():
                os.kill(worker.pid, signal.SIGKILL)
        for worker in workers:
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()

    def _remove(self, worker: Worker) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
