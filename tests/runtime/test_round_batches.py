"""A stateless pipeline gets each round's batches of a source as one batch; others do not."""

from __future__ import annotations

import polars as pl

from strom.connectors import MemorySink, MemorySource
from strom.engine.contracts import END_OF_PARTITION, PollResult, Position
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import StreamingExecutor


def _source() -> MemorySource:
    # three partitions; partition 1 has nothing in the first round
    return MemorySource(
        [
            [{"k": 0, "ts": 1}, {"k": 3, "ts": 4}],
            [None, {"k": 4, "ts": 5}],
            [{"k": 2, "ts": 3}, {"k": 5, "ts": 6}],
        ]
    )


def test_stateless_downstream_gets_one_batch_a_round_in_partition_order() -> None:
    sink = MemorySink()
    pipeline = Pipeline()
    pipeline.source(_source()).filter(pl.col("k") != 5).select("k").sink(sink)
    executor = StreamingExecutor(pipeline)
    executor.step()
    assert [b["k"].to_list() for b in sink.batches] == [[0, 2]]
    executor.run()
    assert [b["k"].to_list() for b in sink.batches] == [[0, 2], [3, 4]]
    assert executor.metrics()["source0"].rows_out == 5


def test_a_window_downstream_gets_the_round_as_one_batch_too() -> None:
    sink, raw = MemorySink(), MemorySink()
    pipeline = Pipeline()
    events = pipeline.source(_source(), timestamp="ts")
    events.sink(raw)
    events.key_by("k").window(Tumbling(10)).agg(agg.count().alias("n")).sink(sink)
    executor = StreamingExecutor(pipeline)
    executor.step()
    # the window takes each partition's rows at its progress: the stateless branch is merged
    assert [b["k"].to_list() for b in raw.batches] == [[0, 2]]
    executor.run()
    assert sink.to_frame()["n"].sum() == 5


def test_other_stateful_operators_still_see_each_partition_batch() -> None:
    raw = MemorySink()
    pipeline = Pipeline()
    events = pipeline.source(_source(), timestamp="ts")
    events.sink(raw)
    events.key_by("k").agg(agg.count().alias("n")).sink(MemorySink())
    executor = StreamingExecutor(pipeline)
    executor.step()
    assert [b["k"].to_list() for b in raw.batches] == [[0], [2]]


class _Partition:
    def __init__(self, batch: pl.DataFrame) -> None:
        self.batches: list[pl.DataFrame] = [batch]

    def poll(self) -> PollResult:
        return self.batches.pop() if self.batches else END_OF_PARTITION

    def position(self) -> Position:
        return {"left": len(self.batches)}

    def seek(self, position: Position) -> None:
        raise NotImplementedError


class _TwoSchemas:
    """Breaks the one-schema contract: its partitions' batches have other dtypes."""

    def schema(self) -> pl.Schema | None:
        return None

    def partition_count(self) -> int:
        return 2

    def open_partition(self, index: int) -> _Partition:
        return _Partition(pl.DataFrame({"k": [1] if index == 0 else [2.5]}))

    def close(self) -> None:
        pass


def test_batches_that_do_not_stack_pass_one_by_one() -> None:
    sink = MemorySink()
    pipeline = Pipeline()
    pipeline.source(_TwoSchemas()).sink(sink)
    StreamingExecutor(pipeline).run()
    assert [b["k"].to_list() for b in sink.batches] == [[1], [2.5]]
