"""A running broker: state, listener and background timers on one asyncio loop.

``BrokerRuntime`` is the async core; :class:`strom.broker.embedded.Broker` runs one in a thread
for tests and embedding, and ``strom broker`` runs one in the main thread until a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from strom.broker.config import BrokerConfig
from strom.broker.handlers import load_handlers
from strom.broker.server import Server
from strom.broker.state import BrokerState, now_ms

__all__ = ["BrokerRuntime"]

log = logging.getLogger("strom.broker")

# How often transactions open longer than their timeout are aborted (and failed marker writes
# retried, and the transaction log fsynced). Kafka checks every 10 s; the check is a scan of the
# transactional ids in memory, cheap enough to make timeouts land within a second.
TRANSACTION_CHECK_INTERVAL_MS = 1000


class BrokerRuntime:
    def __init__(self, config: BrokerConfig) -> None:
        load_handlers()
        self.config = config
        self.state: BrokerState | None = None
        self.server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        """Open the logs (recovering them), start listening, start the timers."""
        config = self.config
        self.state = BrokerState.open(config)
        self.server = Server(self.state, config.host, config.port, config.max_request_bytes)
        try:
            host, port = await self.server.start()
        except BaseException:
            self.state.close()
            raise
        # With port 0 the advertised port is known only once the listener is bound.
        self.state.advertised_port = port
        self.state.groups.start()
        self._tasks = [
            asyncio.create_task(self._every(config.retention_check_interval_ms, self._retention)),
            asyncio.create_task(self._every(TRANSACTION_CHECK_INTERVAL_MS, self._transactions)),
        ]
        interval = config.log.flush.interval_ms
        if interval is not None:
            self._tasks.append(asyncio.create_task(self._every(interval, self._flush)))
        self.address = (host, port)
        log.info("strom broker listening on %s:%d, data in %s", host, port, config.data_dir)
        return host, port

    async def stop(self) -> None:
        """Stop accepting, finish, flush and close everything."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.close()
        if self.state is not None:
            await self.state.groups.stop()
            self.state.close()
        log.info("strom broker stopped")

    async def run_until_signal(self) -> None:
        """Serve until SIGINT or SIGTERM, then shut down cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def _every(self, interval_ms: int, action: object) -> None:
        assert callable(action)
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                action()
            except Exception:
                log.exception("background task failed")

    def _retention(self) -> None:
        assert self.state is not None
        deleted = self.state.logs.apply_retention(now_ms())
        if deleted:
            log.info("retention deleted %d segment(s)", deleted)

    def _transactions(self) -> None:
        assert self.state is not None
        coordinator = self.state.transactions
        coordinator.retry_markers()
        coordinator.abort_timed_out()
        coordinator.sync()

    def _flush(self) -> None:
        assert self.state is not None
        self.state.logs.flush_dirty()
