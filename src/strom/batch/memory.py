"""Memory: sizes as users write them, the resident memory of a process tree, and the budget.

A process's memory is what it holds that the kernel cannot reclaim: its anonymous and
shared-memory pages (``RssAnon`` + ``RssShmem`` in ``/proc/<pid>/status``). File-backed pages
(library code such as Polars', memory-mapped input) are page cache the kernel drops under
pressure, and their resident amount depends on the page cache, not on the job (the same Polars
library measured 11 MiB resident in one checkout and 26 MiB in a fresh one), so they are left
out; the fixed cost of a process is :data:`PROCESS_BASE`. Workers are spawned, so no two
processes of the tree share anonymous pages and the tree's memory is the sum of its processes'.
Where ``status`` lacks those fields the RSS stands in; on other systems memory reads as 0 and no
limit is enforced.
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


def resident(pid: int) -> int:
    """Process ``pid``'s anonymous and shared-memory resident bytes (its RSS if ``status`` does
    not say; 0 if the process is gone or ``/proc`` is not there)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            fields = dict(line.split(b":", 1) for line in f if b":" in line)
        return (int(fields[b"RssAnon"].split()[0]) + int(fields[b"RssShmem"].split()[0])) * 1024
    except (OSError, ValueError, IndexError, KeyError):
        pass
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


def tree(pid: int) -> list[int]:
    """``pid`` and all of its live descendants."""
    found: list[int] = []
    stack, seen = [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        found.append(current)
        stack.extend(children(current))
    return found


def tree_resident(pid: int) -> int:
    """The summed :func:`resident` memory of ``pid`` and all of its descendants."""
    return sum(resident(p) for p in tree(pid))


@dataclass(frozen=True)
class Budget:
    """How ``memory`` bytes are shared: ``workers`` processes, each given ``per_worker`` bytes
    (:func:`resident`, its fixed cost included), map tasks of at most ``task_input`` bytes of
    files and reduce tasks of at most ``reduce_input`` bytes of shuffle files."""

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
