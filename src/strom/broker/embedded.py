"""An in-process broker for tests, demos and users' own test suites.

    with Broker() as broker:                 # ephemeral port, temporary data directory
        produce_to(broker.bootstrap_servers)

The broker runs its asyncio loop in a daemon thread; ``stop()`` shuts it down cleanly.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from strom.broker.config import BrokerConfig
from strom.broker.runtime import BrokerRuntime

__all__ = ["Broker"]


class Broker:
    """A strom broker on 127.0.0.1. ``data_dir=None`` uses a temporary directory, removed on stop.

    Keyword arguments are :class:`BrokerConfig` fields (``port=0`` by default: a free port).
    """

    def __init__(self, data_dir: str | Path | None = None, **config: Any) -> None:
        self._tmp: str | None = None
        if data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="strom-broker-")
            data_dir = self._tmp
        config.setdefault("port", 0)
        self.config = BrokerConfig(data_dir=Path(data_dir), **config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runtime: BrokerRuntime | None = None
        self.host = self.config.host
        self.port = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Broker:
        if self._thread is not None:
            raise RuntimeError("broker already started")
        started: threading.Event = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        runtime = BrokerRuntime(self.config)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                host, port = loop.run_until_complete(runtime.start())
                self.host, self.port = host, port
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(runtime.stop())
            loop.close()

        self._loop, self._runtime = loop, runtime
        self._thread = threading.Thread(target=run, name="strom-broker", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
