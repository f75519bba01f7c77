"""Memory: sizes as users write them, the resident memory of a process tree, and the budget.

RSS is read from ``/proc`` (Linux); on other systems it reads as 0 and no limit is enforced.
The tree's RSS is the sum of every process's RSS, which counts pages the processes share (the
Polars library) once per process: an over-estimate, so a budget held by it is held.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

MIB = 1024**2

PROCESS_BASE = 100 * MIB
"""What one Python process with strom and Polars loaded holds between tasks (measured: 80 MiB
for the driver, 101 MiB for a worker after its first task): the driver's share (with the
multiprocessing resource tracker's 12 MiB) and each worker's fixed cost."""
MIN_TASK_MEMORY = 24 * MIB
"""The least working memory a worker may be given beyond :data:`PROCESS_BASE`."""
MAX_TASK_INPUT = 128 * MIB
"""Input bytes packed into one map task at most (Spark's default split size)."""


def parse_size(text: str) -> int:
    """``"4GiB"``, ``"100MiB"``, ``"512MB"``, ``"1g"`` or bare bytes as an int (``ValueError``
    otherwise).

    >>> parse_size("4GiB"), parse_size("100 MiB"), parse_size("2k")
    (4294967296, 104857600, 2000)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (like 4GiB, 512MiB, 100MB)")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: float) -> str:
    """Bytes for people: ``"1.5 GiB"``, ``"300 MiB"``, ``"12 KiB"``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


def rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (0 if it is gone or ``/proc`` is not there)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), from ``/proc``."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                found.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return found


def tree_rss(pid: int) -> int:
    """The summed RSS of ``pid`` and all of its descendants."""
    total, stack, seen = 0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        total += rss(current)
        stack.extend(children(current))
    return total


@dataclass(frozen=True)
class Budget:
    """How ``memory`` bytes are shared: ``workers`` processes, each given ``per_worker`` bytes
    (RSS, its fixed cost included), map tasks of at most ``task_input`` bytes of files and
    reduce tasks of at most ``reduce_input`` bytes of shuffle files."""

    memory: int
    workers: int
    per_worker: int
    task_input: int
    reduce_input: int

    @classmethod
    def plan(cls, memory: int, workers: int) -> Budget:
        """The budget for ``workers`` (fewer if ``memory`` cannot hold that many: each worker
        needs :data:`PROCESS_BASE` plus :data:`MIN_TASK_MEMORY`); ``ValueError`` if it cannot
        hold one."""
        need = PROCESS_BASE + MIN_TASK_MEMORY
        fit = (memory - PROCESS_BASE) // need
        if fit < 1:
            raise ValueError(
                f"--memory {format_size(memory)} cannot hold the driver and one worker: they "
                f"need at least {format_size(PROCESS_BASE + need)}"
            )
        workers = min(workers, fit)
        per_worker = (memory - PROCESS_BASE) // workers
        # Polars holds a few times a morsel's compressed bytes while decoding: a task's
        # files take at most a third of its working memory.
        # measured peaks over PROCESS_BASE: a map task ~3.6x its files' bytes (decoding and
        # the partial aggregation), a reduce task ~3.5x its shuffle bytes (the partials, their
        # concatenation and the window state built from them); a margin on both
        working = per_worker - PROCESS_BASE
        task_input = max(MIB, min(MAX_TASK_INPUT, working // 4))
        reduce_input = max(MIB, working // 5)
        return cls(memory, workers, per_worker, task_input, reduce_input)
