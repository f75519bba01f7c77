"""Pure parts of the latency benchmark: phases of the load, and their latency percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["KEEP_EVERY", "Phase", "PhaseResult", "kept", "percentile", "summarize"]

#: The pipeline drops events whose seq is a multiple of this (the filter keeps nine in ten).
KEEP_EVERY = 10


def kept(seq: int) -> bool:
    """Whether the benchmark's filter keeps event ``seq``."""
    return seq % KEEP_EVERY != 0


@dataclass(frozen=True)
class Phase:
    """``rate`` events a second for ``seconds``, numbered from ``first_seq``."""

    rate: int
    seconds: float
    first_seq: int

    @property
    def events(self) -> int:
        return int(self.rate * self.seconds)

    @property
    def end_seq(self) -> int:
        """One past the last seq of this phase."""
        return self.first_seq + self.events

    @property
    def expected(self) -> int:
        """How many of this phase's events the filter keeps."""
        dropped = (self.end_seq - 1) // KEEP_EVERY - (self.first_seq - 1) // KEEP_EVERY
        return self.events - dropped


def percentile(ordered: Sequence[float] | npt.NDArray[np.float64], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ascending ``ordered``: the
    smallest value that at least ``q`` % of the values do not exceed (always one of them)."""
    n = len(ordered)
    if n == 0:
        raise ValueError("the percentile of no values is undefined")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], not {q}")
    rank = max(1, math.ceil(q / 100 * n))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class PhaseResult:
    """What the consumer saw of one phase: latencies in ms over the distinct events received
    (a redelivered event counts once, at its first arrival)."""

    phase: Phase
    received: int
    duplicates: int
    lost: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def summarize(
    phase: Phase, seqs: npt.NDArray[np.int64], latencies_us: npt.NDArray[np.int64]
) -> PhaseResult:
    """The percentiles of the records whose seq falls in ``phase`` (records of other phases,
    and the warm-up's, are ignored), in the order the consumer received them."""
    if seqs.shape != latencies_us.shape:
        raise ValueError("seqs and latencies must have one entry per received record")
    inside = (seqs >= phase.first_seq) & (seqs < phase.end_seq)
    mine, lat = seqs[inside], latencies_us[inside]
    _, first = np.unique(mine, return_index=True)  # the first arrival of each seq
    distinct = np.sort(lat[first]).astype(np.float64) / 1000.0
    n = len(distinct)
    return PhaseResult(
        phase=phase,
        received=n,
        duplicates=len(mine) - n,
        lost=max(0, phase.expected - n),
        p50_ms=percentile(distinct, 50) if n else None,
        p99_ms=percentile(distinct, 99) if n else None,
        max_ms=float(distinct[-1]) if n else None,
    )
