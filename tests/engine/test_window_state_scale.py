"""Columnar window state: millions of keys held in one tumbling window with every result
checked (each run reports wall time, CPU time and peak RSS, input batches included); emission
order, the hopping pane path and snapshots checked against their plain definitions.
"""

from __future__ import annotations

import random
import resource
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from engine_model import AGGS, SCHEMA, Scenario, scenarios
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.connectors import MemorySink, MemorySource
from strom.engine.contracts import OperatorState
from strom.pipeline import Hopping, Pipeline, Tumbling, agg
from strom.pipeline.plan import EmitMode
from strom.runtime import StreamingExecutor
from strom.runtime.windows.time_windows import TimeWindowOperator

WINDOW_MS = 60_000
BATCH = 1_000_000


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it measures from here; False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mib(reset: bool) -> float:
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's lifetime peak


def _events(keys: int) -> pl.DataFrame:
    """Every key once, then a fifth of them again (merged into state already held)."""
    i = pl.int_range(keys + keys // 5, dtype=pl.Int64, eager=True)
    return pl.DataFrame({"k": i % keys, "ts": (i * 37) % WINDOW_MS, "v": (i * 7919) % 1_000})


def _hold_keys(keys: int, capsys: pytest.CaptureFixture[str]) -> pl.DataFrame:
    events = _events(keys)
    p = Pipeline()
    batches = [events.slice(i, BATCH) for i in range(0, events.height, BATCH)]
    stream = p.source(MemorySource([batches]), timestamp="ts").key_by("k")
    stream.window(Tumbling(WINDOW_MS)).agg(agg.count(), agg.sum("v"), agg.max("v")).sink(
        sink := MemorySink()
    )
    ex = StreamingExecutor(p)
    reset = _reset_peak_rss()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    peak_state = 0
    while ex.step():
        (op,) = ex.stateful_operators().values()
        peak_state = max(peak_state, op.state_size())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rss = _peak_rss_mib(reset)
    with capsys.disabled():
        print(
            f"\n{keys:,} keys, {events.height:,} events: wall {wall:.1f} s, cpu {cpu:.1f} s, "
            f"{cpu / keys * 1e6:.2f} us cpu per key-window, peak RSS {rss:,.0f} MiB"
            + ("" if reset else " (process lifetime)")
        )
    assert peak_state == keys
    assert ex.metrics()[op.name].state_size == 0  # purged once the final watermark passed
    results = sink.to_frame()
    assert results.height == keys
    assert results["k"].n_unique() == keys
    assert not results["is_update"].any()
    assert (results["window_start"] == 0).all() and (results["window_end"] == WINDOW_MS).all()
    assert results["count"].sum() == events.height
    assert results["sum_v"].sum() == events["v"].sum()
    expected = (
        events.group_by("k")
        .agg(
            pl.len().cast(pl.Int64).alias("count"),
            pl.col("v").sum().alias("sum_v"),
            pl.col("v").max().alias("max_v"),
        )
        .sort("k")
    )
    assert_frame_equal(results.select("k", "count", "sum_v", "max_v").sort("k"), expected)
    return results


def test_one_million_keys_in_one_window(capsys: pytest.CaptureFixture[str]) -> None:
    results = _hold_keys(1_000_000, capsys)
    # a window's results are emitted in the order of ``repr`` of their key tuples
    head = results["k"].head(8).to_list()
    assert head == [0, 1, 10, 100, 1_000, 10_000, 100_000, 100_001]
    assert results["k"].to_list() == sorted(range(1_000_000), key=lambda k: repr((k,)))


@pytest.mark.slow
def test_ten_million_keys_in_one_window(capsys: pytest.CaptureFixture[str]) -> None:
    results = _hold_keys(10_000_000, capsys)
    assert results["k"].head(8).to_list() == [0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000]


# -- the columnar state's own decisions, checked against their plain definitions ----------------

INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.none() | INT64, st.none() | st.integers(-(2**31), 2**31 - 1))))
def test_a_fired_window_emits_in_repr_order_of_key_tuples(keys: list[tuple[Any, Any]]) -> None:
    rows = [{"i": i, "j": j, "ts": 0, "v": 1} for i, j in keys]
    schema = pl.Schema({"i": pl.Int64, "j": pl.Int32, "ts": pl.Int64, "v": pl.Int64})
    p = Pipeline()
    p.source(MemorySource([[rows]], schema=schema), timestamp="ts").key_by("i", "j").window(
        Tumbling(1_000)
    ).agg(agg.count()).sink(sink := MemorySink())
    StreamingExecutor(p).run()
    got = sink.to_frame().select("i", "j").rows() if rows else []
    assert got == sorted(set(keys), key=repr)


def _hopping(s: Scenario, emit: EmitMode, panes: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    p = Pipeline()
    source = MemorySource(s.partitions, schema=SCHEMA)
    stream = p.source(source, timestamp="ts", max_out_of_orderness_ms=s.ooo).key_by("k")
    out = stream.window(s.spec, allowed_lateness_ms=s.lateness, emit=emit).agg(*AGGS)
    out.sink(results := MemorySink())
    out.late().sink(late := MemorySink())
    ex = StreamingExecutor(p)
    (op,) = ex.stateful_operators().values()
    assert isinstance(op, TimeWindowOperator)
    op._panes = panes and op._panes
    ex.run()
    return results.to_frame(), late.to_frame()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(late_events=True), st.sampled_from(["final", "update"]))
def test_hopping_panes_equal_row_by_window_expansion(s: Scenario, emit: EmitMode) -> None:
    """Pre-aggregating hopping windows per pane changes nothing: same rows, same order."""
    fast, fast_late = _hopping(s, emit, panes=True)
    slow, slow_late = _hopping(s, emit, panes=False)
    assert_frame_equal(fast, slow)
    assert_frame_equal(fast_late, slow_late)


def _every_kind(restore_each_step: bool) -> pl.DataFrame:
    rng = random.Random(3)
    names = ["x", "yy", None, "z"]
    parts = [
        [
            [
                {
                    "k": rng.choice(["a", "b", None]),
                    "ts": t * 700 + rng.randrange(0, 2_000),
                    "v": rng.choice([None, *range(-5, 6)]),
                    "s": rng.choice(names),
                }
                for t in range(b * 8, b * 8 + 8)
            ]
            for b in range(6)
        ]
        for _ in range(2)
    ]
    schema = pl.Schema({"k": pl.String, "ts": pl.Int64, "v": pl.Int64, "s": pl.String})
    p = Pipeline()
    stream = p.source(
        MemorySource(parts, schema=schema), timestamp="ts", max_out_of_orderness_ms=3_000
    )
    stream.key_by("k").window(Hopping(4_000, 2_000), allowed_lateness_ms=2_000, emit="update").agg(
        agg.count(),
        agg.sum("v"),
        agg.mean("v"),
        agg.min("s"),
        agg.max("v"),
        agg.first("s"),
        agg.last("v"),
        agg.var("v"),
        agg.count_distinct("v"),
        agg.approx_count_distinct("s"),
        agg.approx_quantile("v", 0.5),
    ).sink(sink := MemorySink())
    ex = StreamingExecutor(p)
    (op,) = ex.stateful_operators().values()
    while ex.step():
        if restore_each_step:
            snap = op.snapshot()
            # Arrow types throughout: the object-path accumulators are plain-data bytes
            assert not any(
                dtype == pl.Object for frame in snap.frames.values() for dtype in frame.dtypes
            )
            restored = OperatorState.from_bytes(snap.to_bytes())
            assert restored.equals(snap)
            op.restore(restored)
            assert op.snapshot().equals(snap)
    return sink.to_frame()


def test_snapshot_bytes_round_trip_and_restoring_them_changes_nothing() -> None:
    restored = _every_kind(restore_each_step=True)
    assert restored.height and restored["is_update"].any()
    assert_frame_equal(restored, _every_kind(restore_each_step=False))
