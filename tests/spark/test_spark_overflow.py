"""Integer sums on Spark are exact or fail as on the other backends: the same results at
Int64's bounds and for sums that leave the range and come back, and a sum outside the range
raises :class:`~strom.engine.overflow.SumOverflowError` with the bounded runner's message."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg, run_bounded
from strom.engine.overflow import INT64_MAX, INT64_MIN, SumOverflowError

M, N = INT64_MAX, INT64_MIN


def _pipeline(
    dtype: pl.DataType, batches: list[list[Any]], window: bool
) -> tuple[Pipeline, MemorySink]:
    frames = [
        pl.DataFrame(
            {
                "k": [1] * len(v) + [2],
                "ts": list(range(len(v) + 1)),
                "x": [*v, True if dtype == pl.Boolean else 1],
            },
            schema={"k": pl.Int64, "ts": pl.Int64, "x": dtype},
        )
        for v in batches
    ]
    p = Pipeline()
    source = p.source(MemorySource([frames[:1], frames[1:]]), timestamp="ts").key_by("k")
    aggs = (agg.sum("x"), agg.mean("x"))
    (source.window(Tumbling(1_000)).agg(*aggs) if window else source.agg(*aggs)).sink(
        sink := MemorySink()
    )
    return p, sink


@pytest.mark.parametrize("window", [False, True], ids=["keyed", "window"])
@pytest.mark.parametrize(
    ("dtype", "batches", "total"),
    [
        (pl.Int64(), [[M - 1], [1]], M),
        (pl.Int64(), [[N + 1], [-1, None]], N),
        (pl.Int64(), [[M, M], [-M, -M, 4]], 4),
        (pl.Int32(), [[2**31 - 1] * 3], 3 * (2**31 - 1)),
        (pl.Boolean(), [[True, None], [True]], 2),
        (pl.Int64(), [[M], [1]], M + 1),
        (pl.Int64(), [[N], [-1]], N - 1),
    ],
    ids=["top", "bottom", "out and back", "int32", "booleans", "over", "under"],
)
def test_sums_match_the_bounded_runner(
    spark: Any, dtype: pl.DataType, batches: list[list[Any]], total: int, window: bool
) -> None:
    from strom.spark import run_spark

    p, sink = _pipeline(dtype, batches, window)
    q, single = _pipeline(dtype, batches, window)
    if not INT64_MIN <= total <= INT64_MAX:
        with pytest.raises(SumOverflowError) as bounded:
            run_bounded(q)
        with pytest.raises(SumOverflowError) as on_spark:
            run_spark(p, spark)
        assert str(on_spark.value) == str(bounded.value)
        assert f"the sum {total} is outside" in str(on_spark.value)
        return
    run_spark(p, spark)
    run_bounded(q)
    got = sink.to_frame().sort("k")
    assert got.equals(single.to_frame().sort("k"))
    assert got["sum_x"].to_list() == [total, len(batches)]
