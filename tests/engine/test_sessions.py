"""Columnar session windows == the per-session reference model (strom's first session operator,
kept in ``session_model.py``) on random streams with late events, allowed lateness, both emit
modes and every kind of aggregation state; snapshots; the grouping rule against a plain loop;
a million keys whose sessions span three batches."""

from __future__ import annotations

import itertools
import time

import numpy as np
import polars as pl
import pytest
from engine_model import SCHEMA, Partitions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from session_model import ReferenceSessionOperator

from strom.connectors import MemorySink, MemorySource
from strom.engine.contracts import OperatorState
from strom.pipeline import Pipeline, Session, agg
from strom.runtime import StreamingExecutor, executor, run_streaming
from strom.runtime.windows.sessions import session_groups

AGGS = (
    agg.count(),
    agg.sum("v"),
    agg.min("v"),
    agg.max("v"),
    agg.mean("v"),
    agg.first("v"),
    agg.last("v"),
    agg.std("v"),
    agg.count_distinct("v"),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[Partitions, int, int, int, str, bool]:
    """Partitions of random micro-batches, out of order by up to ``ooo``, some events far
    behind (late, or bridging sessions); keys are a, b, c and null. Times are multiples of
    250 ms, like the gaps, so events exactly one gap apart (separate sessions) are common."""
    ooo = 250 * draw(st.integers(0, 12))
    partitions: Partitions = []
    next_id = 0
    for _ in range(draw(st.integers(1, 3))):
        frontier = 250 * draw(st.integers(0, 40))
        rows: list[dict[str, object]] = []
        for _ in range(draw(st.integers(0, 25))):
            frontier += 250 * draw(st.integers(0, 10))
            back = draw(st.integers(0, ooo // 250)) * 250
            if draw(st.integers(0, 4)) == 0:
                back = 250 * draw(st.integers(0, 120))
            key = draw(st.sampled_from(["a", "b", "c", None]))
            rows.append(
                {"id": next_id, "k": key, "ts": frontier - back, "v": draw(st.integers(-9, 9))}
            )
            next_id += 1
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(rows) - 1)), max_size=6)))
        bounds = [0, *[c for c in cuts if c < len(rows)], len(rows)]
        partitions.append([rows[a:b] for a, b in itertools.pairwise(bounds) if b > a])
    gap = draw(st.sampled_from([500, 1_500, 4_000]))
    lateness = draw(st.sampled_from([0, 2_000, 10_000]))
    emit = draw(st.sampled_from(["final", "update"]))
    keyed = draw(st.integers(0, 5)) > 0
    return partitions, ooo, gap, lateness, emit, keyed


def _run(
    partitions: Partitions, ooo: int, gap: int, lateness: int, emit: str, keyed: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    p = Pipeline()
    stream = p.source(
        MemorySource(partitions, schema=SCHEMA), timestamp="ts", max_out_of_orderness_ms=ooo
    )
    if keyed:
        stream = stream.key_by("k")
    out = stream.window(Session(gap), allowed_lateness_ms=lateness, emit=emit).agg(*AGGS)
    out.sink(results := MemorySink())
    out.late().sink(late := MemorySink())
    run_streaming(p)
    return results.to_frame(), late.to_frame()


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True) if frame.height else frame


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_columnar_sessions_equal_the_reference_model(
    stream: tuple[Partitions, int, int, int, str, bool],
) -> None:
    results, late = _run(*stream)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(executor, "SessionOperator", ReferenceSessionOperator)
        expected, expected_late = _run(*stream)
    assert_frame_equal(_sorted(results), _sorted(expected), check_exact=False, rel_tol=1e-9)
    assert_frame_equal(_sorted(late), _sorted(expected_late))


def test_snapshot_restore_mid_stream_gives_the_same_results() -> None:
    batches = [
        [{"id": 0, "k": "a", "ts": 0, "v": 1}, {"id": 1, "k": "b", "ts": 500, "v": 2}],
        [{"id": 2, "k": "a", "ts": 5_000, "v": 3}],
        [{"id": 3, "k": "a", "ts": 2_000, "v": 4}],  # bridges [0, 2_500) and [5_000, 7_500)
        [{"id": 4, "k": "b", "ts": 40_000, "v": 5}],
    ]

    def pipeline(rows: Partitions) -> tuple[Pipeline, MemorySink]:
        p = Pipeline()
        stream = p.source(
            MemorySource(rows, schema=SCHEMA), timestamp="ts", max_out_of_orderness_ms=0
        )
        out = stream.key_by("k").window(Session(2_500), allowed_lateness_ms=20_000).agg(*AGGS)
        out.sink(sink := MemorySink())
        return p, sink

    whole, all_results = pipeline([batches])
    StreamingExecutor(whole).run()
    first, early = pipeline([batches])
    ex = StreamingExecutor(first)
    for _ in range(2):  # read the first two batches, then stop
        ex.step()
    (op,) = ex.stateful_operators().values()
    snapshot = OperatorState.from_bytes(op.snapshot().to_bytes())
    rest, late_results = pipeline([batches[2:]])
    ex2 = StreamingExecutor(rest)
    (op2,) = ex2.stateful_operators().values()
    op2.restore(snapshot)
    assert op2.state_size() == op.state_size() == 3  # a: [0, 2_500), [5_000, 7_500); b
    ex2.run()
    resumed = pl.concat([early.to_frame(), late_results.to_frame()])
    assert_frame_equal(_sorted(resumed), _sorted(all_results.to_frame()))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([None, 1, 2]), st.integers(0, 40), st.integers(1, 15)),
        min_size=1,
        max_size=30,
    )
)
def test_session_groups_match_a_plain_loop(rows: list[tuple[int | None, int, int]]) -> None:
    """Grouping sorted intervals: a group opens at a key's first interval and wherever one
    starts at or after the largest end before it (within the key)."""
    ordered = sorted(rows, key=lambda r: (r[0] is not None, r[0] or 0, r[1]))
    intervals = [(key, start, start + length) for key, start, length in ordered]
    expected, group, last_key, reach = [], 0, object(), 0
    for key, start, end in intervals:
        if key != last_key or start >= reach:
            group, reach = group + 1, end
        reach, last_key = max(reach, end), key
        expected.append(group)
    new_key = np.array(
        [i == 0 or intervals[i][0] != intervals[i - 1][0] for i in range(len(intervals))]
    )
    starts = np.array([r[1] for r in intervals], np.int64)
    ends = np.array([r[2] for r in intervals], np.int64)
    assert session_groups(starts, ends, new_key).tolist() == expected


def test_a_million_keys_whose_sessions_span_three_batches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = 1_000_000
    k = pl.int_range(keys, dtype=pl.Int64, eager=True)
    batches = [pl.DataFrame({"k": k, "ts": pl.repeat(j * 1_000, keys, eager=True), "v": k % 7 + j})
               for j in range(3)]  # fmt: skip
    p = Pipeline()
    stream = p.source(MemorySource([batches]), timestamp="ts").key_by("k")
    stream.window(Session(5_000)).agg(agg.count(), agg.sum("v")).sink(sink := MemorySink())
    ex = StreamingExecutor(p)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    held = 0
    while ex.step():
        (op,) = ex.stateful_operators().values()
        held = max(held, op.state_size())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    with capsys.disabled():
        print(f"\n{keys:,} session keys, {3 * keys:,} events: wall {wall:.1f} s, cpu {cpu:.1f} s")
    assert held == keys
    results = sink.to_frame()
    expected = (
        pl.concat(batches)
        .group_by("k")
        .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("v").sum().alias("sum_v"))
    )
    assert results.height == keys and not results["is_update"].any()
    assert (results["window_start"] == 0).all() and (results["window_end"] == 7_000).all()
    assert_frame_equal(results.select(expected.columns).sort("k"), expected.sort("k"))
