"""Integer sums are exact or a SumOverflowError, the same in the streaming runtime and the
bounded runner: sums that leave Int64's range in one batch or only after merging batches and
partitions, upwards and downwards; sums at the bounds and sums that leave the range and come
back (exact); every integer width, Booleans and nulls; ``mean`` of such values (never an
error). The word arithmetic of :mod:`strom.engine.overflow` against Python's ints."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.bounded import run_bounded
from strom.connectors import MemorySink, MemorySource
from strom.engine.overflow import (
    INT64_MAX,
    INT64_MIN,
    SumOverflowError,
    add_wrapping,
    exact,
    split_words,
)
from strom.pipeline import Hopping, Pipeline, Session, Tumbling, agg
from strom.runtime import run_streaming

M, N = INT64_MAX, INT64_MIN
# name: (dtype, partitions of batches of key 1's values, the exact sum of key 1)
CASES: dict[str, tuple[pl.DataType, list[list[list[Any]]], int | None]] = {
    "one batch": (pl.Int64(), [[[M, 1]]], M + 1),
    "across batches": (pl.Int64(), [[[M], [1]]], M + 1),
    "across partitions": (pl.Int64(), [[[M // 2 + 1]], [[M // 2 + 1]]], M + 1),
    "negative": (pl.Int64(), [[[N], [-1]]], N - 1),
    "negative across partitions": (pl.Int64(), [[[N + 5, -3]], [[-3]]], N - 1),
    "far out": (pl.Int64(), [[[M] * 5, [M] * 5]], 10 * M),
    "at the top": (pl.Int64(), [[[M - 1], [1]]], M),
    "at the bottom": (pl.Int64(), [[[N + 1]], [[-1]]], N),
    "out and back": (pl.Int64(), [[[2**62, 2**62], [2**62]], [[-(2**62), -(2**62)]]], 2**62),
    "out and back in one batch": (pl.Int64(), [[[M, M, -M, -M, 7]]], 7),
    "uint64 fits": (pl.UInt64(), [[[2**63 - 2], [1]]], M),
    "uint64 too big": (pl.UInt64(), [[[2**64 - 1]]], 2**64 - 1),
    "int32 past 2**31": (pl.Int32(), [[[2**31 - 1] * 4, [2**31 - 1]]], 5 * (2**31 - 1)),
    "uint32 past 2**32": (pl.UInt32(), [[[2**32 - 1] * 3]], 3 * (2**32 - 1)),
    "int8": (pl.Int8(), [[[127] * 3], [[-128]]], 253),
    "nulls": (pl.Int64(), [[[M, None], [None]], [[None]]], M),
    "only nulls": (pl.Int64(), [[[None], [None]]], None),
    "booleans": (pl.Boolean(), [[[True, None, True], [False, True]]], 3),
}
WINDOWS = {"tumbling": Tumbling(1_000), "hopping": Hopping(1_000, 500), "session": Session(5_000)}


def _frames(dtype: pl.DataType, partitions: list[list[list[Any]]]) -> list[list[pl.DataFrame]]:
    """Key 1 gets the values; key 2 one small value per batch (a group that never fails)."""
    out = []
    for p, batches in enumerate(partitions):
        frames = []
        for b, values in enumerate(batches):
            ts = [10 * (p + b + i) for i in range(len(values))]
            small = [True] if dtype == pl.Boolean else [1]
            frames.append(
                pl.DataFrame(
                    {"k": [1] * len(values) + [2], "ts": [*ts, 0], "x": [*values, *small]},
                    schema={"k": pl.Int64, "ts": pl.Int64, "x": dtype},
                )
            )
        out.append(frames)
    return out


def _run(runner: Any, how: str, frames: list[list[pl.DataFrame]]) -> pl.DataFrame:
    p = Pipeline()
    source = p.source(MemorySource(frames), timestamp="ts")
    keyed = source.key_by("k")
    aggs = (agg.sum("x"), agg.mean("x"), agg.count("x"))
    out = keyed.agg(*aggs) if how == "keyed" else keyed.window(WINDOWS[how]).agg(*aggs)
    out.sink(sink := MemorySink())
    runner(p)
    frame = sink.to_frame()
    if "window_start" in frame.columns:  # the sessions and hopping windows of key 1, together
        frame = frame.filter(pl.col("window_start") <= 0)
    return frame.group_by("k").last().sort("k")


@pytest.mark.parametrize("how", ["keyed", *WINDOWS])
@pytest.mark.parametrize("runner", [run_streaming, run_bounded], ids=["streaming", "bounded"])
@pytest.mark.parametrize("case", CASES)
def test_integer_sums_are_exact_or_fail_naming_the_group(case: str, runner: Any, how: str) -> None:
    dtype, partitions, total = CASES[case]
    if case == "out and back" and how == "keyed" and runner is run_streaming:
        pytest.skip("a keyed aggregation's updates sum the rows so far: see the test below")
    frames = _frames(dtype, partitions)
    if total is not None and not INT64_MIN <= total <= INT64_MAX:
        with pytest.raises(SumOverflowError) as raised:
            _run(runner, how, frames)
        message = str(raised.value)
        # (the streaming keyed aggregation fails at its first update out of range)
        shown = "" if how == "keyed" and runner is run_streaming else f" {total}"
        assert f"agg.sum('x') into column 'sum_x': the sum{shown}" in message
        assert "is outside Int64's range" in message
        assert "for k=1" in message
        if how != "keyed":
            assert "window_start=" in message and "window_end=" in message
        return
    got = _run(runner, how, frames)
    assert got.schema["sum_x"] == pl.Int64
    assert got.row(0, named=True)["sum_x"] == total
    assert got.row(1, named=True)["sum_x"] == len([b for part in partitions for b in part])


def test_each_update_of_a_keyed_aggregation_is_the_exact_sum_so_far() -> None:
    """The streaming keyed aggregation emits a row per batch: the second batch brings the sum
    back into range, but the first batch's update already left it."""
    frames = _frames(pl.Int64(), [[[2**62, 2**62], [-(2**62)]]])
    with pytest.raises(SumOverflowError, match=f"the sum {2**63} is outside"):
        _run(run_streaming, "keyed", frames)
    assert _run(run_bounded, "keyed", frames).row(0, named=True)["sum_x"] == 2**62


@pytest.mark.parametrize("runner", [run_streaming, run_bounded], ids=["streaming", "bounded"])
def test_mean_of_values_whose_sum_leaves_int64_is_not_an_error(runner: Any) -> None:
    frames = _frames(pl.Int64(), [[[M, M], [M]], [[M - 3]]])
    p = Pipeline()
    source = p.source(MemorySource(frames), timestamp="ts")
    source.key_by("k").agg(agg.mean("x")).sink(sink := MemorySink())
    runner(p)
    mean = sink.to_frame().filter(pl.col("k") == 1)["mean_x"].to_list()[-1]
    assert mean == pytest.approx((4 * M - 3) / 4, rel=1e-15)


def test_a_float_or_decimal_cast_is_the_way_to_a_wider_sum() -> None:
    frames = _frames(pl.Int64(), [[[M], [M]]])
    p = Pipeline()
    source = p.source(MemorySource(frames)).select(
        "k", pl.col("x").cast(pl.Decimal(38, 0)).alias("d"), pl.col("x").cast(pl.Float64)
    )
    source.key_by("k").agg(agg.sum("d"), agg.sum("x")).sink(sink := MemorySink())
    run_streaming(p)
    row = sink.to_frame().filter(pl.col("k") == 1).row(-1, named=True)
    assert row["sum_d"] == 2 * M and row["sum_x"] == pytest.approx(2.0 * M)


int64 = st.integers(INT64_MIN, INT64_MAX) | st.sampled_from([M, N, M - 1, N + 1, 0, -1, 1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(int64, min_size=1, max_size=6), min_size=1, max_size=8))
def test_word_sums_equal_python_ints(batches: list[list[int]]) -> None:
    """Batches of partials added into 3 rows, in words: each row's exact sum, as Python's."""
    rows = 3
    lo, wraps = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
    want = [0] * rows
    for values in batches:
        ids = np.arange(len(values), dtype=np.int64) % rows
        ids, first = np.unique(ids, return_index=True)
        parts = [values[i] for i in first]
        add_lo, add_wraps, _ = split_words(pl.Series(parts, dtype=pl.Int128))
        add_wrapping(lo, wraps, ids, add_lo, add_wraps)
        for i, v in zip(ids.tolist(), parts, strict=True):
            want[i] += v
    assert [exact(lo[i], wraps[i]) for i in range(rows)] == want


@given(st.integers(-(2**126), 2**126))
def test_split_words_round_trip(value: int) -> None:
    lo, wraps, reach = split_words(pl.Series([value, None], dtype=pl.Int128))
    assert reach == abs(value)
    assert split_words(pl.Series([-3, 4, None], dtype=pl.Int128))[2] == 7
    assert split_words(pl.Series([-3, 4, None], dtype=pl.Int64))[2] >= 7  # a bound
    assert exact(lo[0], wraps[0]) == value
    assert exact(lo[1], wraps[1]) == 0


@pytest.mark.parametrize("runner", [run_streaming, run_bounded], ids=["streaming", "bounded"])
@pytest.mark.parametrize(("late", "total"), [(-M, M), (5, 2 * M + 5)], ids=["exact", "over"])
def test_a_late_event_bridging_two_sessions_merges_their_sums_exactly(
    runner: Any, late: int, total: int
) -> None:
    """Two sessions of ``M`` each, then an event between them that makes them one."""
    schema = {"k": pl.Int64, "ts": pl.Int64, "x": pl.Int64}
    batches = [
        pl.DataFrame({"k": [1, 1], "ts": [0, 8_000], "x": [M, M]}, schema=schema),
        pl.DataFrame({"k": [1], "ts": [4_000], "x": [late]}, schema=schema),
    ]
    p = Pipeline()
    source = p.source(MemorySource([batches]), timestamp="ts", max_out_of_orderness_ms=10_000)
    source.key_by("k").window(Session(5_000)).agg(agg.sum("x")).sink(sink := MemorySink())
    if total > M:
        with pytest.raises(SumOverflowError, match=f"the sum {total} is outside .* for k=1"):
            runner(p)
        return
    runner(p)
    assert sink.to_frame()["sum_x"].to_list() == [total]
