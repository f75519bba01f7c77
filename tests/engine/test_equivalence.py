"""Streaming == bounded == DuckDB reference, on random streams over 1-4 partitions."""

from __future__ import annotations

import polars as pl
from engine_model import Scenario, build, canonical, late_pairs, reference, scenarios
from hypothesis import HealthCheck, event, given, settings
from polars.testing import assert_frame_equal

from strom.bounded import run_bounded
from strom.pipeline import Tumbling
from strom.runtime import latest, run_streaming

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_same(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert_frame_equal(canonical(actual), canonical(expected), check_exact=False, rel_tol=1e-9)


@SETTINGS
@given(scenarios(late_events=False, sessions=True))
def test_in_bound_disorder_streaming_equals_bounded_equals_duckdb(s: Scenario) -> None:
    p, stream_out, stream_late = build(s)
    run_streaming(p)
    q, bounded_out, bounded_late = build(s)
    run_bounded(q)
    streamed = stream_out.to_frame()
    assert stream_late.to_frame().height == 0
    assert bounded_late.to_frame().height == 0
    if streamed.height:
        assert not streamed["is_update"].any()  # each window emitted once, final
    _assert_same(streamed, bounded_out.to_frame())
    _assert_same(streamed, reference(s, set()))
    if streamed.height:  # exact equality, first/last and column types included
        assert_frame_equal(
            streamed.sort("window_end", "window_start", "k"),
            bounded_out.to_frame().sort("window_end", "window_start", "k"),
        )


@SETTINGS
@given(scenarios(late_events=True))
def test_late_events_are_accounted_for(s: Scenario) -> None:
    expected_late = late_pairs(s)
    p, stream_out, stream_late = build(s)
    run_streaming(p)
    late = stream_late.to_frame()
    got_late = (
        set(zip(late["id"].to_list(), late["window_start"].to_list(), strict=True))
        if late.height
        else set()
    )
    assert got_late == expected_late
    event("late pairs" if expected_late else "no late pairs")
    event(
        "updates"
        if stream_out.batches and stream_out.to_frame()["is_update"].any()
        else "no updates"
    )
    final = latest(stream_out.to_frame(), ["k"]) if stream_out.batches else stream_out.to_frame()
    _assert_same(final, reference(s, expected_late))
    # conservation: every (event, window) pair is counted or in the late output, never both
    total_pairs = sum(
        len(_windows(int(str(r["ts"])), s))
        for part in s.partitions
        for batch in part
        for r in batch
    )
    counted = int(final["count"].sum()) if final.height else 0
    assert counted + len(got_late) == total_pairs
    if isinstance(s.spec, Tumbling):
        # the bounded run over the on-time events equals the streaming run exactly
        late_ids = {i for i, _ in expected_late}
        on_time = [
            [[r for r in batch if r["id"] not in late_ids] for batch in part]
            for part in s.partitions
        ]
        q, bounded_out, _ = build(s, on_time)
        run_bounded(q)
        if final.height:
            assert_frame_equal(
                final.drop("is_update").sort("window_end", "window_start", "k"),
                bounded_out.to_frame().drop("is_update").sort("window_end", "window_start", "k"),
            )


def _windows(ts: int, s: Scenario) -> list[tuple[int, int]]:
    from engine_model import windows_of

    return windows_of(ts, s.spec)
