"""Window assignment functions, exhaustively by hypothesis; vectorized == scalar."""

from __future__ import annotations

import itertools

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.pipeline import Hopping, Tumbling
from strom.pipeline.windows import (
    assign_windows,
    hopping_windows,
    merge_sessions,
    overlapping,
    tumbling_window,
)

ts_st = st.integers(-(10**12), 10**12)
size_st = st.integers(1, 10**6)


@given(ts_st, size_st, st.integers(-(10**6), 10**6))
def test_tumbling_contains_and_aligned(ts: int, size: int, offset: int) -> None:
    start, end = tumbling_window(ts, size, offset)
    assert start <= ts < end and end - start == size
    assert (start - offset) % size == 0


size_slide_st = st.integers(1, 10**5).flatmap(
    lambda slide: st.tuples(st.integers(1, 100 * slide), st.just(slide))
)


@settings(deadline=None)
@given(ts_st, size_slide_st)
def test_hopping_is_every_aligned_window_containing_ts(
    ts: int, size_slide: tuple[int, int]
) -> None:
    size, slide = size_slide
    windows = hopping_windows(ts, size, slide)
    assert all(s <= ts < e and e - s == size and s % slide == 0 for s, e in windows)
    assert [s for s, _ in windows] == sorted({s for s, _ in windows})
    # complete: the neighbours just outside the list do not contain ts
    first = windows[0][0] if windows else ts - ts % slide
    assert not (first - slide <= ts < first - slide + size)
    assert len(windows) in (size // slide, -(-size // slide))


@given(st.lists(ts_st, max_size=30), st.sampled_from([Tumbling(7), Hopping(10, 3), Hopping(5, 5)]))
def test_vectorized_assignment_matches_scalar(values: list[int], spec: Tumbling | Hopping) -> None:
    df = pl.DataFrame({"ts": values}, schema={"ts": pl.Int64})
    got = sorted(assign_windows(df, spec, "ts").select("ts", "window_start", "window_end").rows())
    if isinstance(spec, Tumbling):
        want = sorted((t, *tumbling_window(t, spec.size_ms)) for t in values)
    else:
        want = sorted(
            (t, s, e) for t in values for s, e in hopping_windows(t, spec.size_ms, spec.slide_ms)
        )
    assert got == want


intervals_st = st.lists(
    st.tuples(st.integers(-1000, 1000), st.integers(1, 200)).map(lambda p: (p[0], p[0] + p[1])),
    max_size=25,
)


@given(intervals_st)
def test_merge_sessions_disjoint_and_covering(intervals: list[tuple[int, int]]) -> None:
    merged = merge_sessions(intervals)
    for (_, e1), (s2, _) in itertools.pairwise(merged):
        assert e1 <= s2  # sorted, disjoint (touching allowed, not merged)
    for s, e in intervals:
        assert sum(1 for ms, me in merged if ms <= s and e <= me) == 1
    covered = {t for s, e in intervals for t in range(s, e)}
    assert covered == {t for s, e in merged for t in range(s, e)}


@given(intervals_st, intervals_st)
def test_merge_is_order_independent_and_incremental(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    assert merge_sessions(a + b) == merge_sessions(merge_sessions(b) + merge_sessions(a))
    sessions = merge_sessions(a)
    for new in b:  # the streaming operator's step: absorb every overlapping session
        hit = overlapping(sessions, new)
        start = min([new[0], *(sessions[i][0] for i in hit)])
        end = max([new[1], *(sessions[i][1] for i in hit)])
        sessions = sorted([s for i, s in enumerate(sessions) if i not in hit] + [(start, end)])
    assert sessions == merge_sessions(a + b)
