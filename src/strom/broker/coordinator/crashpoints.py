"""Named crash points: ``kill -9`` of the broker at an exact step, for recovery tests.

``STROM_BROKER_CRASH_AT=NAME`` in a broker's environment makes :func:`crash_point` with that
name send SIGKILL to its own process, the same as an external ``kill -9`` landing at that
instant (no cleanup, no flush beyond what already reached the OS). Unset, a crash point is one
set lookup. The names are listed in :data:`CRASH_POINTS`; an unknown name is an error at start,
so a test cannot silently arm nothing.
"""

from __future__ import annotations

import os
import signal
from typing import Final

__all__ = ["CRASH_POINTS", "ENV", "crash_point"]

ENV: Final = "STROM_BROKER_CRASH_AT"

CRASH_POINTS: Final = frozenset(
    {
        # the commit/abort decision is in the transaction log, no marker written yet
        "txn-prepared",
        # the first of a transaction's markers is written, the others are not
        "txn-first-marker",
        # every marker and offset is written, the Complete state is not yet logged
        "txn-markers-written",
        # the Complete state is logged, the EndTxn answer not yet sent
        "txn-completed",
    }
)


def _armed() -> frozenset[str]:
    names = frozenset(n for n in os.environ.get(ENV, "").split(",") if n)
    unknown = names - CRASH_POINTS
    if unknown:
        raise ValueError(f"{ENV}: unknown crash point(s) {sorted(unknown)}")
    return names


_ARMED: Final = _armed()


def crash_point(name: str) -> None:
    """SIGKILL this process if ``name`` is armed (see the module docstring)."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
