"""Graceful stops for long-running commands."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["stop_on_signals"]

_Handler = Callable[[int, FrameType | None], Any] | int | None


@contextmanager
def stop_on_signals(on_signal: Callable[[signal.Signals], None]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM call ``on_signal`` instead of killing the process, so the
    command can finish its current step and close cleanly; the previous handlers come back after.
    Outside the main thread signals cannot be handled, and are left alone."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        on_signal(signal.Signals(signum))

    previous: dict[signal.Signals, _Handler] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
