"""Window specifications and window assignment as pure functions.

Time is integer milliseconds. Every window is the half-open interval ``[start, end)``. Sizes,
gaps and offsets may also be given as :class:`datetime.timedelta` (a whole number of
milliseconds); they are stored as integer milliseconds.

- :class:`Tumbling` windows partition time: an event at ``ts`` belongs to exactly one window,
  the one whose start is ``offset + k * size`` for the integer ``k`` with ``start <= ts < end``.
- :class:`Hopping` windows of ``size`` start every ``slide``: an event belongs to every window
  ``[s, s + size)`` with ``s = offset + k * slide`` and ``s <= ts < s + size`` (``ceil(size/slide)``
  or ``floor(size/slide)`` windows; none when ``slide > size`` and ``ts`` falls in a hole).
- :class:`Session` windows: each event opens ``[ts, ts + gap)``; overlapping intervals of one key
  merge. Two events therefore share a session iff a chain of events links them with consecutive
  timestamps less than ``gap`` apart; the session is ``[first_ts, last_ts + gap)``.

The scalar functions here are the definition; the vectorized expressions used by executors are
tested against them.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import polars as pl

_SPAN_LIMIT = 2**62
"""Spans stay below 2**62 ms (146 million years), so ``ts + span`` cannot overflow Int64."""

Duration = int | timedelta
"""A span of time: integer milliseconds, or a :class:`~datetime.timedelta`."""


def to_ms(value: Duration, name: str) -> int:
    """``value`` as integer milliseconds; a ``timedelta`` must be a whole number of them.

    >>> to_ms(timedelta(seconds=1.5), "size"), to_ms(250, "size")
    (1500, 250)
    """
    if isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        if micros % 1_000:
            raise ValueError(f"{name} must be a whole number of milliseconds, got {value!r}")
        return micros // 1_000  # timedelta's range (999,999,999 days) fits Int64 milliseconds
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(
            f"{name} must be integer milliseconds or a datetime.timedelta, got {value!r}"
        )
    ms = int(value)  # NumPy integers too
    if not -_SPAN_LIMIT < ms < _SPAN_LIMIT:
        raise ValueError(f"{name} of {ms} ms is beyond what Int64 event times can hold")
    return ms


@dataclass(frozen=True)
class Tumbling:
    """Fixed-size, non-overlapping windows of ``size_ms``, aligned to ``offset_ms``.

    >>> Tumbling(timedelta(minutes=1)) == Tumbling(60_000)
    True
    """

    size_ms: int
    offset_ms: int = 0

    def __init__(self, size_ms: Duration, offset_ms: Duration = 0) -> None:
        object.__setattr__(self, "size_ms", to_ms(size_ms, "Tumbling size"))
        object.__setattr__(self, "offset_ms", to_ms(offset_ms, "Tumbling offset"))
        _check_positive("Tumbling.size_ms", self.size_ms)


@dataclass(frozen=True)
class Hopping:
    """Windows of ``size_ms`` starting every ``slide_ms`` (overlapping when slide < size)."""

    size_ms: int
    slide_ms: int
    offset_ms: int = 0

    def __init__(self, size_ms: Duration, slide_ms: Duration, offset_ms: Duration = 0) -> None:
        object.__setattr__(self, "size_ms", to_ms(size_ms, "Hopping size"))
        object.__setattr__(self, "slide_ms", to_ms(slide_ms, "Hopping slide"))
        object.__setattr__(self, "offset_ms", to_ms(offset_ms, "Hopping offset"))
        _check_positive("Hopping.size_ms", self.size_ms)
        _check_positive("Hopping.slide_ms", self.slide_ms)


@dataclass(frozen=True)
class Session:
    """Per-key activity sessions that close after ``gap_ms`` without events."""

    gap_ms: int

    def __init__(self, gap_ms: Duration) -> None:
        object.__setattr__(self, "gap_ms", to_ms(gap_ms, "Session gap"))
        _check_positive("Session.gap_ms", self.gap_ms)


WindowSpec = Tumbling | Hopping | Session
Interval = tuple[int, int]


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer of milliseconds, got {value!r}")


def tumbling_window(ts: int, size_ms: int, offset_ms: int = 0) -> Interval:
    """The one tumbling window containing ``ts``."""
    start = ts - (ts - offset_ms) % size_ms
    return (start, start + size_ms)


def hopping_windows(ts: int, size_ms: int, slide_ms: int, offset_ms: int = 0) -> list[Interval]:
    """Every hopping window containing ``ts``, in increasing order of start."""
    last_start = ts - (ts - offset_ms) % slide_ms
    starts: list[int] = []
    start = last_start
    while start + size_ms > ts:
        starts.append(start)
        start -= slide_ms
    return [(s, s + size_ms) for s in reversed(starts)]


def merge_sessions(intervals: Iterable[Interval]) -> list[Interval]:
    """Merge overlapping half-open intervals; the result is sorted and pairwise disjoint.

    Intervals that merely touch (``a.end == b.start``) stay separate: their events are exactly
    ``gap`` apart, which is a gap of inactivity of ``gap``.
    """
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def overlapping(sessions: Sequence[Interval], new: Interval) -> list[int]:
    """Indices of the disjoint sorted ``sessions`` that overlap ``new`` (and so merge with it)."""
    return [i for i, (s, e) in enumerate(sessions) if s < new[1] and new[0] < e]


def window_start_exprs(spec: Tumbling | Hopping, ts: pl.Expr) -> list[pl.Expr]:
    """Vectorized candidate starts for ``ts`` (Int64 ms); callers keep ``start + size > ts``.

    For tumbling windows there is exactly one candidate and it always contains ``ts``.
    """
    if isinstance(spec, Tumbling):
        return [ts - (ts - spec.offset_ms) % spec.size_ms]
    last = ts - (ts - spec.offset_ms) % spec.slide_ms
    count = -(-spec.size_ms // spec.slide_ms)
    return [last - j * spec.slide_ms for j in range(count)]


def assign_windows(df: pl.DataFrame, spec: Tumbling | Hopping, ts_col: str) -> pl.DataFrame:
    """Add ``window_start``/``window_end`` (Int64): one output row per (row, window) pair.

    Row order is preserved; a hopping row's windows appear in decreasing order of start.
    """
    return _assign(df.lazy(), spec, ts_col).collect()


def assign_windows_lazy(lf: pl.LazyFrame, spec: Tumbling | Hopping, ts_col: str) -> pl.LazyFrame:
    """Lazy form of :func:`assign_windows`."""
    return _assign(lf, spec, ts_col)


def _assign(lf: pl.LazyFrame, spec: Tumbling | Hopping, ts_col: str) -> pl.LazyFrame:
    ts = pl.col(ts_col)
    starts = window_start_exprs(spec, ts)
    if len(starts) == 1:
        out = lf.with_columns(starts[0].alias("window_start"))
    else:
        out = lf.with_columns(pl.concat_list(starts).alias("window_start")).explode("window_start")
    out = out.with_columns((pl.col("window_start") + spec.size_ms).alias("window_end"))
    if isinstance(spec, Hopping):
        out = out.filter(pl.col("window_end") > ts)
    return out


def event_time_ms(column: str, dtype: pl.DataType) -> pl.Expr:
    """Event time of ``column`` as Int64 epoch milliseconds (integers are taken as ms)."""
    if isinstance(dtype, pl.Datetime):
        return pl.col(column).dt.epoch("ms")
    return pl.col(column).cast(pl.Int64)
