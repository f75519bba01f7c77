"""GeneratorSource: bounded by a batch count (both executors) or unbounded."""

from __future__ import annotations

import polars as pl
import pytest

from strom.bounded import run_bounded
from strom.connectors import GeneratorSource, MemorySink
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import StreamingExecutor, run_streaming


def _gen(partition: int, i: int) -> pl.DataFrame | None:
    if i == 1:
        return None  # an idle poll
    return pl.DataFrame({"k": [f"p{partition}"] * 3, "ts": [i * 1_000 + j for j in range(3)]})


def test_bounded_generator_in_both_executors() -> None:
    outs = []
    for runner in (run_streaming, run_bounded):
        p = Pipeline()
        src = GeneratorSource(_gen, partitions=2, batches=4)
        p.source(src, timestamp="ts").key_by("k").window(Tumbling(10_000)).agg(agg.count()).sink(
            sink := MemorySink()
        )
        runner(p)
        outs.append(sink.to_frame().sort("k").select("k", "count").rows())
    assert outs[0] == outs[1] == [("p0", 9), ("p1", 9)]


def test_unbounded_generator_runs_by_steps() -> None:
    p = Pipeline()
    src = GeneratorSource(lambda part, i: pl.DataFrame({"i": [i]}))
    p.source(src).sink(sink := MemorySink())
    StreamingExecutor(p).run(max_rounds=5)
    assert sink.to_frame()["i"].to_list() == [0, 1, 2, 3, 4]
    q = Pipeline()
    q.source(src).sink(MemorySink())
    with pytest.raises(ValueError, match="unbounded"):
        run_bounded(q)
