"""Windows take a round's batches of all partitions as one batch, and hold back batches that
cannot change a result yet to merge them later, several partitions' at once: the results and
late rows are exactly those of each batch on its own, merged on arrival (what the runtime did
before), for every kind of window, lateness, disorder and step before the window."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.connectors import MemorySink, MemorySource
from strom.engine.constants import MIN_WATERMARK
from strom.pipeline import Hopping, Pipeline, Session, Tumbling, agg
from strom.pipeline.windows import WindowSpec
from strom.runtime import StreamingExecutor
from strom.runtime import executor as executor_module
from strom.runtime.windows.base import WindowOperatorBase
from strom.runtime.windows.sessions import SessionOperator
from strom.runtime.windows.time_windows import TimeWindowOperator

SCHEMA = pl.Schema({"k": pl.String(), "ts": pl.Int64(), "v": pl.Int64()})
AGGS = (agg.count(), agg.sum("v"), agg.mean("v"), agg.max("v"), agg.first("v"), agg.last("v"),
        agg.count_distinct("v"), agg.min("k"))  # fmt: skip
SPECS: list[WindowSpec] = [Tumbling(1_000), Hopping(1_500, 500), Hopping(1_500, 1_000),
                           Session(700)]  # fmt: skip
COUNT_SUM = (agg.count(), agg.sum("v"))
Partitions = list[list[list[dict[str, Any]]]]

rows = st.fixed_dictionaries({
    "k": st.sampled_from(["a", "b", "c"]),
    "step": st.integers(0, 300),
    "back": st.integers(0, 900),  # beyond the allowed disorder: some rows are late
    "v": st.none() | st.integers(-5, 5),
})  # fmt: skip


@st.composite
def partitions(draw: st.DrawFn) -> Partitions:
    parts: Partitions = []
    for _ in range(draw(st.integers(1, 3))):
        t, batches = 0, []
        for raw in draw(st.lists(st.lists(rows, max_size=5), max_size=8)):
            batch = []
            for r in raw:
                t += r["step"]
                batch.append({"k": r["k"], "ts": t - r["back"], "v": r["v"]})
            batches.append(batch)
        parts.append(batches)
    return parts


def _run(
    parts: Partitions,
    spec: WindowSpec,
    ooo: int,
    lateness: int,
    aggs: tuple[Any, ...] = AGGS,
    steps: str = "",
) -> tuple[pl.DataFrame, pl.DataFrame, list[WindowOperatorBase]]:
    p = Pipeline()
    source = p.source(
        MemorySource(parts, schema=SCHEMA), timestamp="ts", max_out_of_orderness_ms=ooo
    )
    if steps == "filter":  # drops rows of some partitions: the merged batch's runs recounted
        source = source.filter(pl.col("v").is_null() | (pl.col("v") != 0)).with_columns(
            w=pl.col("v") * 2
        )
    elif steps == "map_batches":  # a user function: run once per partition's rows
        source = source.map_batches(lambda b: b.filter(pl.col("v").is_null() | (pl.col("v") > -4)))
    windowed = source.key_by("k").window(spec, allowed_lateness_ms=lateness).agg(*aggs)
    windowed.sink(results := MemorySink())
    windowed.late().sink(late := MemorySink())
    run = StreamingExecutor(p, clock=lambda: 0.0)
    run.run()
    windows = list(run.stateful_operators().values())
    assert all(isinstance(op, WindowOperatorBase) for op in windows)
    return results.to_frame(), late.to_frame(), windows  # type: ignore[return-value]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: repr(s))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=partitions(),
    ooo=st.sampled_from([0, 300]),
    lateness=st.sampled_from([0, 400]),
    first_last=st.booleans(),
    steps=st.sampled_from(["", "filter", "map_batches"]),
)
def test_held_and_merged_batches_give_what_each_batch_on_arrival_gives(
    spec: WindowSpec,
    parts: Partitions,
    ooo: int,
    lateness: int,
    first_last: bool,
    steps: str,
) -> None:
    # without first/last the held rows of all partitions merge together, with them one
    # partition at a time
    aggs = AGGS if first_last else tuple(a for a in AGGS if a.label not in ("first", "last"))
    got, got_late, _ = _run(parts, spec, ooo, lateness, aggs, steps)
    with pytest.MonkeyPatch.context() as m:  # each batch on its own, merged on arrival
        m.setattr(executor_module, "_segment_downstream", lambda operator: False)
        for cls in (TimeWindowOperator, SessionOperator):
            m.setattr(cls, "_oldest_end", lambda self, event_time: MIN_WATERMARK)
        want, want_late, _ = _run(parts, spec, ooo, lateness, aggs, steps)
    assert_frame_equal(got, want)
    assert_frame_equal(got_late, want_late)


def test_a_trickle_is_merged_once_per_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    # three partitions, twenty batches of one row each, all in one 1 s window
    parts = [[[{"k": "a", "ts": 10 * i + p, "v": i}] for i in range(20)] for p in range(3)]
    calls: list[int] = []
    process = TimeWindowOperator._process

    def counting(self: TimeWindowOperator, partition: int, batch: pl.DataFrame, wm: int) -> None:
        calls.append(batch.height)
        process(self, partition, batch, wm)

    monkeypatch.setattr(TimeWindowOperator, "_process", counting)
    results, late, (window,) = _run(parts, Tumbling(1_000), 0, 0, COUNT_SUM)
    assert calls == [60]  # one merge, at the end of input, of every partition's rows
    assert results.select("k", "count", "sum_v").rows() == [("a", 60, 3 * sum(range(20)))]
    assert late.height == 0
    assert window.state_size() == 0


def test_a_late_batch_is_merged_on_arrival_after_the_held_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # partition 0 moves the watermark past the first window; partition 1's row is then late
    parts = [
        [[{"k": "a", "ts": 100, "v": 1}], [{"k": "a", "ts": 2_500, "v": 2}]],
        [[{"k": "a", "ts": 2_400, "v": 3}], [{"k": "a", "ts": 500, "v": 4}]],
    ]
    calls: list[list[int]] = []
    process = TimeWindowOperator._process

    def counting(self: TimeWindowOperator, partition: int, batch: pl.DataFrame, wm: int) -> None:
        calls.append(batch.get_column("v").to_list())
        process(self, partition, batch, wm)

    monkeypatch.setattr(TimeWindowOperator, "_process", counting)
    results, late, _ = _run(parts, Tumbling(1_000), 0, 0, COUNT_SUM)
    # held: 100, 2,400, 2,500 (the watermark is 100); partition 0's second progress moves it
    # to 2,400, past the first window's end: the held rows merge (in arrival order), the
    # window fires, and then 500 comes late: merged on its own, to the late output
    assert calls == [[1, 3, 2], [4]]
    assert late.get_column("v").to_list() == [4]
    assert results.sort("window_start").get_column("count").to_list() == [1, 2]


def test_held_rows_merge_before_a_session_they_extend_fires() -> None:
    # 300 is held, then merged (a late row forces it); 500 and 1,100 are held while the
    # watermark moves to 1,100, past the session [300, 1000) (purged only at 1,400): they
    # extend it, so it must not fire with 300 alone
    parts = [[[{"k": "a", "ts": 300, "v": 1}], [{"k": "a", "ts": -900, "v": 2}],
              [{"k": "a", "ts": 500, "v": 3}, {"k": "a", "ts": 1_100, "v": 4}]]]  # fmt: skip
    results, late, _ = _run(parts, Session(700), 0, 400, COUNT_SUM)
    assert results.select("window_start", "window_end", "count").rows() == [(300, 1_800, 3)]
    assert late.get_column("v").to_list() == [2]
