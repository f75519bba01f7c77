"""``strom bench eos``: what exactly-once costs, in three parts.

1. :mod:`benchmarks.eos.throughput`: Nexmark q0 and q5, Kafka → strom → Kafka, exactly-once
   over at-least-once events per core-second at checkpoint intervals 100 ms, 1 s and 5 s
   (and no checkpoints at all as a baseline), runs interleaved;
2. :mod:`benchmarks.eos.latency`: p50/p99 end to end per guarantee and rate;
3. :mod:`benchmarks.checkpoint_cost`: checkpoint pause, duration and recovery at 1 MB, 100 MB
   and 1 GB of state (``--quick``: 1 MB and 100 MB).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import checkpoint_cost
from benchmarks.eos import latency, throughput

__all__ = ["FULL", "QUICK", "EosParams", "run", "run_suite"]

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class EosParams:
    throughput: throughput.ThroughputParams | None
    latency: latency.LatencyParams | None
    checkpoint_mb: tuple[float, ...]


QUICK = EosParams(throughput.QUICK, latency.QUICK, checkpoint_cost.SIZES_MB[:2])
FULL = EosParams(throughput.FULL, latency.FULL, checkpoint_cost.SIZES_MB)


def run(quick: bool, emit: Emit) -> None:
    """The three parts (``quick``: shorter); ``emit`` gets one dict per result line."""
    run_suite(QUICK if quick else FULL, emit)


def run_suite(params: EosParams, emit: Emit) -> None:
    if params.throughput is not None:
        throughput.run(params.throughput, emit)
    if params.latency is not None:
        latency.run(params.latency, emit)
    if params.checkpoint_mb:
        checkpoint_cost.run(params.checkpoint_mb, emit)
