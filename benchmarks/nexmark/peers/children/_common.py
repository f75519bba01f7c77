"""Shared by the peer child scripts, which run inside each peer's own virtualenv.

Standard library only (the peer venvs hold the peer and its dependencies, not strom). A child is
started as ``python CHILD.py --query Q --bootstrap H:P --events-dir DIR --output OUT.ndjson
--stats STATS.json``; it writes its result rows as NDJSON to ``--output`` and a JSON object to
``--stats``: ``events`` (input records read), ``startup_wall_s``/``startup_cpu_s`` (interpreter,
imports, JVM, building the job) and ``wall_s``/``cpu_s`` (the query, from the first record it may
read to the last result written), or ``na_reason`` when the peer cannot express the query.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
WINDOW_MS = 10_000
SLIDE_MS = 2_000
OUT_OF_ORDERNESS_MS = 4_000
TOPICS = {"person": "nexmark-person", "auction": "nexmark-auction", "bid": "nexmark-bid"}
INPUTS = {
    "q0": ("bid",),
    "q1": ("bid",),
    "q2": ("bid",),
    "q3": ("person", "auction"),
    "q4": ("auction", "bid"),
    "q5": ("bid",),
    "q7": ("bid",),
    "q8": ("person", "auction"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--query", required=True)
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--events-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    return parser.parse_args()


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return []
    out = list(children)
    for child in children:
        out += _descendants(child)
    return out


def _proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, and the CPU of its children it has already waited for
    return sum(int(x) for x in fields[11:15]) / _TICKS


def tree_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live descendants (a JVM)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
    return own + sum(_proc_cpu_s(pid) for pid in _descendants(os.getpid()))


def process_start_wall() -> float:
    """time.time() at which this process started (from /proc, so imports count as start-up)."""
    with open("/proc/self/stat", encoding="ascii") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as f:
        uptime = float(f.read().split()[0])
    return time.time() - uptime + start_ticks / _TICKS


class Clock:
    """Start-up ends at :meth:`ready`; the query ends at :meth:`done`."""

    def __init__(self) -> None:
        self.started = process_start_wall()
        self.ready_wall = 0.0
        self.ready_cpu = 0.0
        self.stats: dict[str, Any] = {}

    def ready(self) -> None:
        self.ready_wall, self.ready_cpu = time.time(), tree_cpu_s()

    def done(self, events: int, end_wall: float | None = None) -> None:
        now, cpu = time.time(), tree_cpu_s()
        self.stats = {
            "events": events,
            "startup_wall_s": self.ready_wall - self.started,
            "startup_cpu_s": self.ready_cpu,
            "wall_s": (now if end_wall is None else end_wall) - self.ready_wall,
            "cpu_s": cpu - self.ready_cpu,
        }


def write_stats(path: Path, stats: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    tmp.replace(path)


def write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row))
            f.write("\n")
            n += 1
    return n


def bid_q1(b: dict[str, Any]) -> dict[str, Any]:
    return {
        "auction": b["auction"],
        "bidder": b["bidder"],
        "price": 0.908 * b["price"],
        "dateTime": b["dateTime"],
        "extra": b["extra"],
    }
