"""Allowed lateness re-emits updated results; sessions merge when a late event bridges them."""

from __future__ import annotations

import polars as pl

from strom.bounded import run_bounded
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, Session, Tumbling, WindowSpec, agg
from strom.pipeline.plan import EmitMode
from strom.runtime import StreamingExecutor, latest


def _run(
    batches: list[list[dict[str, object]]],
    spec: WindowSpec,
    lateness: int,
    emit: EmitMode = "final",
) -> tuple[pl.DataFrame, pl.DataFrame, StreamingExecutor]:
    p = Pipeline()
    src = MemorySource([batches])
    out = (
        p.source(src, timestamp="ts")
        .key_by("k")
        .window(spec, allowed_lateness_ms=lateness, emit=emit)
        .agg(agg.count(), agg.sum("v"), agg.last("v"))
    )
    out.sink(results := MemorySink())
    out.late().sink(late := MemorySink())
    ex = StreamingExecutor(p)
    ex.run()
    return results.to_frame(), late.to_frame(), ex


def row(ts: int, v: int, k: str = "a") -> dict[str, object]:
    return {"k": k, "ts": ts, "v": v}


def test_late_event_within_lateness_reemits_as_update() -> None:
    results, late, _ = _run(
        [
            [row(1_000, 1), row(2_000, 2)],
            [row(10_500, 5)],
            [row(3_000, 10)],
            [row(16_000, 7)],
            [row(4_000, 100)],
        ],
        Tumbling(10_000),
        lateness=5_000,
    )
    first = results.filter(pl.col("window_start") == 0)
    assert first.select("count", "sum_v", "last_v", "is_update").rows() == [
        (2, 3, 2, False),  # fired when the watermark reached 10_000
        (3, 13, 10, True),  # the late event at 3_000 (watermark 10_500 < 15_000) corrected it
    ]
    # at watermark 16_000 >= 10_000 + 5_000 the window is gone: 4_000 goes to the late output
    assert late.select("ts", "v", "window_start", "window_end").rows() == [(4_000, 100, 0, 10_000)]


def test_emit_update_mode_streams_running_values_with_the_same_final() -> None:
    batches = [[row(1_000, 1)], [row(2_000, 2)], [row(12_000, 0)]]
    results, _, _ = _run(batches, Tumbling(10_000), lateness=0, emit="update")
    first = results.filter(pl.col("window_start") == 0)
    assert first.select("sum_v", "is_update").rows() == [(1, False), (3, True)]
    final, _, _ = _run(batches, Tumbling(10_000), lateness=0)
    assert latest(results, ["k"]).drop("is_update").equals(final.drop("is_update"))


def test_late_event_bridges_two_fired_sessions() -> None:
    results, late, ex = _run(
        [
            [row(0, 1), row(1_000, 2)],
            [row(5_000, 3), row(6_000, 4)],
            [row(20_000, 0)],
            [row(3_000, 10)],
            [row(60_000, 0)],
        ],
        Session(2_500),
        lateness=30_000,
    )
    a = results.filter(pl.col("window_start") < 20_000)
    assert a.select("window_start", "window_end", "count", "sum_v", "is_update").rows() == [
        (0, 3_500, 2, 3, False),
        (5_000, 8_500, 2, 7, False),
        (0, 8_500, 5, 20, True),  # 3_000 bridges [0, 3_500) and [5_000, 8_500)
    ]
    assert late.height == 0
    final = latest(results, ["k"]).sort("window_start")
    assert final.select("window_start", "window_end", "count").rows() == [
        (0, 8_500, 5),
        (20_000, 22_500, 1),
        (60_000, 62_500, 1),
    ]
    assert ex.metrics()["2:WindowAgg"].state_size == 0
    assert ex.metrics()["2:WindowAgg"].rows_in == 7


def test_session_event_beyond_lateness_goes_to_late_output() -> None:
    results, late, _ = _run(
        [[row(0, 1)], [row(20_000, 2)], [row(1_000, 5)]], Session(2_500), lateness=1_000
    )
    assert late.select("ts", "window_start", "window_end").rows() == [(1_000, 1_000, 3_500)]
    assert results["count"].sum() == 2


def test_streaming_sessions_equal_bounded_when_nothing_is_late() -> None:
    rows = [
        row(t, t % 7, k)
        for t, k in [
            (0, "a"),
            (900, "b"),
            (2_000, "a"),
            (4_400, "a"),
            (5_000, "b"),
            (9_000, "a"),
            (9_100, "b"),
        ]
    ]
    p = Pipeline()
    src = MemorySource([[rows[:3], rows[3:]], [[row(100, 3, "a")]]])
    out = p.source(src, timestamp="ts", max_out_of_orderness_ms=5_000).key_by("k")
    agged = out.window(Session(2_500)).agg(agg.count(), agg.first("v"), agg.last("v"))
    agged.sink(streamed := MemorySink())
    StreamingExecutor(p).run()
    q = Pipeline()
    out2 = q.source(src, timestamp="ts", max_out_of_orderness_ms=5_000).key_by("k")
    out2.window(Session(2_500)).agg(agg.count(), agg.first("v"), agg.last("v")).sink(
        bounded := MemorySink()
    )
    run_bounded(q)
    order = ["window_end", "window_start", "k"]
    assert streamed.to_frame().sort(order).equals(bounded.to_frame().sort(order))


def test_snapshot_restore_round_trip() -> None:
    p = Pipeline()
    src = MemorySource([[[row(1_000, 1)], [row(2_000, 2)], [row(12_000, 3)]]])
    p.source(src, timestamp="ts").key_by("k").window(Tumbling(10_000)).agg(agg.sum("v")).sink(
        sink := MemorySink()
    )
    ex = StreamingExecutor(p)
    ex.step()
    (op,) = ex.stateful_operators().values()
    snap = op.snapshot()
    ex.step()
    op.restore(snap)
    assert op.state_size() == 1
    ex.run()  # the second batch is "lost" by the restore: only what the snapshot held remains
    assert sink.to_frame().select("window_start", "sum_v").rows() == [(0, 1), (10_000, 3)]
