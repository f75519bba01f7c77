"""An integer sum's words survive a snapshot: a window whose sum left Int64's range before the
snapshot and comes back after it is exact, one that leaves it only after the restore fails,
and a snapshot from before sums kept ``wraps`` restores with none."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from strom.connectors import MemorySink, MemorySource
from strom.engine.overflow import INT64_MAX, SumOverflowError
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import ExecutorSnapshot, StreamingExecutor
from strom.runtime.windows.slots import SumSlots

M = INT64_MAX
SCHEMA = {"k": pl.Int64, "ts": pl.Int64, "x": pl.Int64}


def _build(values: list[int]) -> tuple[Pipeline, MemorySink]:
    batches = [
        pl.DataFrame({"k": [1], "ts": [i], "x": [v]}, schema=SCHEMA) for i, v in enumerate(values)
    ]
    p = Pipeline()
    source = p.source(MemorySource([batches]), timestamp="ts")
    source.key_by("k").window(Tumbling(1_000)).agg(agg.sum("x")).sink(sink := MemorySink())
    return p, sink


def _resumed(values: list[int], steps: int) -> pl.DataFrame:
    """Run ``steps`` steps (one batch each), snapshot to bytes, finish in a fresh executor."""
    p, _ = _build(values)
    first = StreamingExecutor(p)
    for _ in range(steps):
        assert first.step()
    blob = first.snapshot().to_bytes()
    first.close()
    q, sink = _build(values)
    second = StreamingExecutor(q)
    second.restore(ExecutorSnapshot.from_bytes(blob))
    second.run()
    return sink.to_frame()


def test_a_sum_out_of_range_at_the_snapshot_comes_back_exactly() -> None:
    frame = _resumed([M, M, 3, -M, -M], steps=2)
    assert frame["sum_x"].to_list() == [3]


def test_a_sum_that_leaves_the_range_after_the_restore_fails() -> None:
    with pytest.raises(SumOverflowError, match=f"the sum {M + 1} is outside .* for k=1"):
        _resumed([M - 10, 5, 6], steps=2)
    assert _resumed([M - 10, 5, 5], steps=2)["sum_x"].to_list() == [M]


def test_a_snapshot_without_wraps_restores_with_none() -> None:
    slots = SumSlots(0, agg.sum("x"), 4, integer=True)
    ids = np.array([1, 3], np.int64)
    slots.load(ids, [pl.Series([M, -5]), pl.Series([2, 1])])
    assert slots.arrays[0][ids].tolist() == [M, -5]
    assert slots.arrays[2].tolist() == [0, 0, 0, 0]
    assert slots.output(ids, pl.Int64()).to_list() == [M, -5]
