"""Test-only fault injection: ``kill -9`` of a checkpointing run at a named step.

``STROM_CHECKPOINT_CRASH_AT=NAME[:N[:stop]]`` in a run's environment makes the ``N``-th
(default: first) :func:`crash_point` call with that name send SIGKILL to its own process, the
same as an external ``kill -9`` landing at that instant (``:stop``: SIGSTOP instead, to make a
zombie that a test resumes with SIGCONT). It exists for the exactly-once recovery tests,
which need a crash exactly between two steps that a random kill rarely separates; unset, a
crash point is one dictionary lookup. An unknown name is an error at import, so a test cannot
silently arm nothing. Not for production use.

The points, in a checkpoint's order (:mod:`.coordinator`):

- ``pre-committed``: every sink's ``pre_commit(c)`` returned (a Kafka sink's records flushed
  into its open transaction), checkpoint ``c`` not written;
- ``store-write``: inside the write of checkpoint ``c``, its state files written, its manifest
  not (:mod:`.store`);
- ``written``: checkpoint ``c`` written, the deciding sink's ``commit(c)`` not made (a Kafka
  sink: after the flush, before EndTxn);
- ``decided``: the deciding sink committed ``c`` (EndTxn), no other sink has (between the
  Kafka commit and a database's commit).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Final

__all__ = ["CRASH_POINTS", "ENV", "crash_point"]

ENV: Final = "STROM_CHECKPOINT_CRASH_AT"

CRASH_POINTS: Final = frozenset({"pre-committed", "store-write", "written", "decided"})


def _armed() -> tuple[str, int, signal.Signals] | None:
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    count, _, action = rest.partition(":")
    if name not in CRASH_POINTS:
        raise ValueError(f"{ENV}: unknown crash point {name!r} (one of {sorted(CRASH_POINTS)})")
    if count and not (count.isdigit() and int(count) >= 1):
        raise ValueError(f"{ENV}: the hit count must be a positive integer, not {count!r}")
    if action not in ("", "stop"):
        raise ValueError(f"{ENV}: the action must be 'stop' or nothing (kill), not {action!r}")
    return name, int(count or 1), signal.SIGSTOP if action else signal.SIGKILL


_ARMED: Final = _armed()
_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """SIGKILL (or SIGSTOP) this process if ``name`` is armed and reached for the armed
    time."""
    if _ARMED is None or _ARMED[0] != name:
        return
    _hits[name] += 1
    if _hits[name] == _ARMED[1]:
        os.kill(os.getpid(), _ARMED[2])
