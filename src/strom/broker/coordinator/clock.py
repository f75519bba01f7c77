"""Time sources. Coordinator deadlines use a monotonic clock; stored timestamps use wall time.

Both are plain ``() -> int`` callables in milliseconds so tests can substitute a manual clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "monotonic_ms", "wall_ms"]

Clock = Callable[[], int]


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to; for deterministic tests of timeouts."""

    def __init__(self, start_ms: int = 1_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` and return the new time."""
        self.now_ms += ms
        return self.now_ms
