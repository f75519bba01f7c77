"""Time-window snapshots find their rows from the state's arrays, not the windows' dicts: with
windows purged and their row ids reused (so id order is not window order), integer keys (the
NumPy path of restore) with and without nulls, and two key columns, every snapshot's rows are
grouped by window as ``meta["windows"]`` says, and snapshot, restore, rest equals one
uninterrupted run."""

from __future__ import annotations

from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Hopping, Pipeline, Tumbling, agg
from strom.runtime import ExecutorSnapshot, StreamingExecutor

SCHEMA = pl.Schema({"k": pl.Int64(), "j": pl.Int32(), "ts": pl.Int64(), "v": pl.Int64()})
Batches = list[list[dict[str, Any]]]


def _run(
    batches: Batches, keys: tuple[str, ...], hopping: bool
) -> tuple[StreamingExecutor, MemorySink]:
    p = Pipeline()
    sink = MemorySink()
    spec = Hopping(200, 100) if hopping else Tumbling(100)
    source = p.source(MemorySource([batches], schema=SCHEMA), timestamp="ts")
    windowed = source.key_by(*keys).window(spec, allowed_lateness_ms=150)
    windowed.agg(agg.count(), agg.sum("v"), agg.max("v")).sink(sink)
    return StreamingExecutor(p, clock=lambda: 0.0), sink


row = st.fixed_dictionaries({
    "k": st.none() | st.integers(-3, 12),
    "j": st.integers(0, 2),
    "step": st.integers(0, 60),
    "v": st.integers(-5, 5),
})  # fmt: skip


@st.composite
def streams(draw: st.DrawFn) -> Batches:
    t, out = 0, []
    for raw in draw(st.lists(st.lists(row, min_size=1, max_size=8), min_size=1, max_size=8)):
        batch = []
        for r in raw:
            t += r["step"]
            batch.append({"k": r["k"], "j": r["j"], "ts": t, "v": r["v"]})
        out.append(batch)
    return out


def _check_grouped(snapshot: ExecutorSnapshot) -> None:
    for state in snapshot.states.values():
        ends = state.frame("rows").get_column("end").to_list() if "rows" in state.frames else []
        at = 0
        for end, count in state.meta["windows"]:
            assert count > 0 and ends[at : at + count] == [end] * count
            at += count
        assert at == len(ends)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=streams(),
    cut=st.integers(0, 8),
    keys=st.sampled_from([("k",), ("k", "j")]),
    hopping=st.booleans(),
)
def test_rows_grouped_by_window_and_restore_equals_an_uninterrupted_run(
    batches: Batches, cut: int, keys: tuple[str, ...], hopping: bool
) -> None:
    whole, expected = _run(batches, keys, hopping)
    whole.run()
    first, before = _run(batches, keys, hopping)
    for _ in range(cut):
        if not first.step():
            break
        _check_grouped(first.snapshot())
    snapshot = first.snapshot()
    second, after = _run(batches, keys, hopping)
    second.restore(ExecutorSnapshot.from_bytes(snapshot.to_bytes()))
    for name, op in second.stateful_operators().items():
        assert op.snapshot().equals(snapshot.states[name]), name
    second.run()
    got = before.batches + after.batches
    if not expected.batches:
        assert not got
        return
    assert_frame_equal(pl.concat(got), pl.concat(expected.batches))
