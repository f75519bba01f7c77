"""map / flat_map (the per-record slow path) and re-keying window results."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from strom.bounded import run_bounded
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, ProcessContext, ProcessFunction, Tumbling, agg
from strom.runtime import run_streaming

ROWS = [
    [
        [{"k": "a", "ts": 1_000, "v": 1}, {"k": "b", "ts": 2_000, "v": 2}],
        [{"k": "a", "ts": 12_000, "v": 3}],
    ],
    [[{"k": "b", "ts": 3_000, "v": 4}, {"k": "a", "ts": 25_000, "v": 5}]],
]


def _both(build: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    outs = []
    for run in (run_streaming, run_bounded):
        p = Pipeline()
        build(p).sink(sink := MemorySink())
        run(p)
        outs.append(sink.to_frame())
    return outs[0], outs[1]


def test_map_and_flat_map() -> None:
    def build(p: Pipeline) -> Any:
        s = p.source(MemorySource(ROWS), timestamp="ts")
        s = s.map(
            lambda r: {"k": r["k"].upper(), "ts": r["ts"], "double": r["v"] * 2},
            output_schema={"k": pl.String, "ts": pl.Int64, "double": pl.Int64},
        )
        return s.flat_map(
            lambda r: [{"k": r["k"], "ts": r["ts"], "i": i} for i in range(r["double"] // 4)],
            output_schema={"k": pl.String, "ts": pl.Int64, "i": pl.Int64},
        )

    streamed, bounded = _both(build)
    expected = [("B", 2_000, 0), ("A", 12_000, 0), ("B", 3_000, 0), ("B", 3_000, 1)]
    expected += [("A", 25_000, 0), ("A", 25_000, 1)]
    assert sorted(streamed.rows()) == sorted(expected)
    assert sorted(bounded.rows()) == sorted(expected)


def test_map_keeps_event_time_for_a_following_window() -> None:
    def build(p: Pipeline) -> Any:
        s = p.source(MemorySource(ROWS), timestamp="ts").map(
            lambda r: {"k": r["k"], "ts": r["ts"], "v": -r["v"]},
            output_schema={"k": pl.String, "ts": pl.Int64, "v": pl.Int64},
        )
        return s.key_by("k").window(Tumbling(10_000)).agg(agg.sum("v"))

    streamed, bounded = _both(build)
    order = ["window_end", "k"]
    assert streamed.sort(order).equals(bounded.sort(order))
    assert streamed.sort(order).select("k", "sum_v").rows() == [
        ("a", -1),
        ("b", -6),
        ("a", -3),
        ("a", -5),
    ]


def test_map_rejects_non_dict_rows() -> None:
    p = Pipeline()
    p.source(MemorySource(ROWS)).map(lambda r: 1, output_schema={"x": pl.Int64}).sink(  # type: ignore[arg-type,return-value]
        MemorySink()
    )
    with pytest.raises(TypeError, match="must be dicts"):
        run_streaming(p)


def test_rekeyed_window_results_window_again() -> None:
    """Per-key 10 s sums, re-keyed by parity of the sum, summed again per 20 s by window_end."""

    def build(p: Pipeline) -> Any:
        s = p.source(MemorySource(ROWS), timestamp="ts", max_out_of_orderness_ms=5_000)
        per_key = s.key_by("k").window(Tumbling(10_000)).agg(agg.sum("v"))
        parity = per_key.with_columns(odd=pl.col("sum_v") % 2 == 1)
        return parity.key_by("odd").window(Tumbling(20_000)).agg(agg.count(), agg.sum("sum_v"))

    streamed, bounded = _both(build)
    order = ["window_end", "odd"]
    assert streamed.sort(order).equals(bounded.sort(order))
    # first-level windows end at 10_000 (a: 1, b: 6), 20_000 (a: 3), 30_000 (a: 5)
    assert streamed.sort(order).select("odd", "window_start", "count", "sum_sum_v").rows() == [
        (False, 0, 1, 6),
        (True, 0, 1, 1),
        (True, 20_000, 2, 8),
    ]


class RunningMax(ProcessFunction):
    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        best = ctx.value_state("best")
        if best.value() is None or row["count"] > best.value():
            best.update(row["count"])
            ctx.emit({"k": ctx.key, "window_end": row["window_end"], "best": row["count"]})


def test_rekeyed_window_results_feed_a_process_function() -> None:
    def build(p: Pipeline) -> Any:
        s = p.source(MemorySource(ROWS), timestamp="ts", max_out_of_orderness_ms=5_000)
        counts = s.key_by("k").window(Tumbling(10_000)).agg(agg.count())
        schema = {"k": pl.String, "window_end": pl.Int64, "best": pl.Int64}
        return counts.key_by("k").process(RunningMax(), output_schema=schema)

    streamed, bounded = _both(build)
    assert (
        sorted(streamed.rows())
        == sorted(bounded.rows())
        == [
            ("a", 10_000, 1),
            ("b", 10_000, 2),
        ]
    )
