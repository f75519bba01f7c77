"""End-to-end latency with and without exactly-once: the latency suite's pipeline and load.

The engine is ``strom run`` of :mod:`benchmarks.latency.pipeline` (Kafka → filter → Kafka) in
each mode: no checkpoints (at-least-once, today's default), checkpoints with the at-least-once
sink, and the exactly-once (transactional) sink at each checkpoint interval. The producer,
the timing consumer and the phases are :mod:`benchmarks.latency.runner`'s: a record's latency
is the time the consumer receives it minus the time the producer handed it to its client. The
consumer reads with ``isolation.level=read_committed`` (librdkafka's default), so an
exactly-once record counts only once its transaction has committed; for the other modes,
whose records are not transactional, read_committed and read_uncommitted read the same.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.latency.runner import HERE as LATENCY_DIR
from benchmarks.latency.runner import Engine, SuiteParams, _measure
from benchmarks.systems import start_strom

__all__ = ["FULL", "QUICK", "LatencyMode", "LatencyParams", "engine", "run"]

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class LatencyMode:
    """``guarantee`` of the run (``None``: no checkpoints) and its checkpoint interval."""

    guarantee: str | None
    interval_ms: int = 1_000

    @property
    def label(self) -> str:
        if self.guarantee is None:
            return "alo, no checkpoints"
        short = "eos" if self.guarantee == "exactly-once" else "alo"
        return f"{short}, checkpoints every {self.interval_ms} ms"


MODES = (
    LatencyMode(None),
    LatencyMode("at-least-once", 1_000),
    LatencyMode("exactly-once", 100),
    LatencyMode("exactly-once", 1_000),
)


@dataclass(frozen=True)
class LatencyParams:
    suite: SuiteParams
    modes: tuple[LatencyMode, ...] = MODES


QUICK = LatencyParams(SuiteParams(rates=(200, 2_000), seconds=3.0, idle_s=1.0))
FULL = LatencyParams(SuiteParams(rates=(200, 2_000, 20_000), seconds=10.0, idle_s=2.0))


def engine(mode: LatencyMode, n: int) -> Engine:
    """``strom run`` of the latency pipeline in ``mode`` (engine number ``n`` of the run)."""
    argv: tuple[str, ...] = (sys.executable, "-m", "strom", "run", str(LATENCY_DIR / "pipeline.py"))
    env: tuple[tuple[str, str], ...] = ()
    if mode.guarantee is not None:
        argv += ("--checkpoint-dir", "{work}/checkpoints", "--checkpoint-interval",
                 f"{mode.interval_ms}ms", "--guarantee", mode.guarantee)  # fmt: skip
    if mode.guarantee == "exactly-once":
        env = (("LATENCY_TRANSACTIONAL_ID", f"eos-latency-{n}"),)
    return Engine(f"strom {version('strom')}", argv, env)


def run(params: LatencyParams, emit: Emit) -> None:
    """Every mode in turn on one broker; one ``eos.latency`` line per mode and rate."""
    work = Path(tempfile.mkdtemp(prefix="strom-eos-latency-"))
    try:
        with start_strom(params.suite.flush) as broker:
            for n, mode in enumerate(params.modes):
                lines = _measure(engine(mode, n), broker.bootstrap, params.suite, work / f"e{n}", n)
                for line in lines:
                    if line["benchmark"] != "latency":
                        continue  # the idle line: the latency suite reports it
                    line["benchmark"] = "eos.latency"
                    line["params"] = dict(line.get("params", {})) | {
                        "mode": mode.label,
                        "guarantee": mode.guarantee or "at-least-once",
                        "interval_ms": None if mode.guarantee is None else mode.interval_ms,
                    }
                    line.pop("meets_target", None)  # the latency suite's target, not this one's
                    emit(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)
