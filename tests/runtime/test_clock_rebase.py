"""A restored snapshot's processing-time values are rebased onto the restoring executor's clock.

Another process's monotonic clock has another origin: an executor restoring a snapshot keeps each
partition's time since its last data (idleness) and each processing-time timer's remaining time
as they were at the snapshot, less the ``elapsed_ms`` it is told passed in between. Clocks are
injected, so nothing here depends on real time.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from strom import (
    GeneratorSource,
    MemorySink,
    Pipeline,
    ProcessContext,
    ProcessFunction,
    Tumbling,
    agg,
)
from strom.runtime import ExecutorSnapshot, StreamingExecutor

SCHEMA = pl.Schema({"ts": pl.Int64(), "k": pl.String()})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RemindLater(ProcessFunction):
    """A processing-time timer 10 s after a key's first element; it emits when it fires."""

    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        if ctx.value_state("seen").value() is None:
            ctx.value_state("seen").update(True)
            ctx.register_processing_time_timer(int(ctx.current_processing_time) + 10_000)

    def on_timer(self, timestamp: int, ctx: ProcessContext) -> None:
        ctx.emit({"k": ctx.key})


def _timer_pipeline() -> tuple[Pipeline, MemorySink]:
    def generate(partition: int, index: int) -> pl.DataFrame | None:
        # the element comes in the second poll: processing time is the last progress's clock
        return pl.DataFrame({"ts": [0], "k": ["a"]}, schema=SCHEMA) if index == 1 else None

    p = Pipeline()
    source = p.source(GeneratorSource(generate, schema=SCHEMA), timestamp="ts")  # unbounded
    out = source.key_by("k").process(RemindLater(), output_schema={"k": pl.String},
                                     ordering="arrival")  # fmt: skip
    out.sink(sink := MemorySink())
    return p, sink


def _snapshot_with_timer_6s_away() -> bytes:
    p, _ = _timer_pipeline()
    clock = Clock(1_000_000.0)
    first = StreamingExecutor(p, clock=clock)
    first.step()
    first.step()  # the element: a timer at 1_010_000
    clock.now = 1_004_000.0
    first.step()
    blob = first.snapshot().to_bytes()
    first.close()
    return blob


def test_a_processing_time_timer_keeps_its_remaining_time_in_another_clock() -> None:
    blob = _snapshot_with_timer_6s_away()
    p, sink = _timer_pipeline()
    clock = Clock(50.0)  # a new process: its clock started near 0
    second = StreamingExecutor(p, clock=clock)
    second.restore(ExecutorSnapshot.from_bytes(blob))
    clock.now = 50.0 + 5_999
    second.step()
    assert sink.to_frame().height == 0
    clock.now = 50.0 + 6_000
    second.step()
    assert sink.to_frame().rows() == [("a",)]
    second.close()


def test_a_timer_due_during_the_outage_fires_at_once() -> None:
    blob = _snapshot_with_timer_6s_away()
    p, sink = _timer_pipeline()
    second = StreamingExecutor(p, clock=Clock(50.0))
    second.restore(ExecutorSnapshot.from_bytes(blob), elapsed_ms=6_000)
    second.step()
    assert sink.to_frame().rows() == [("a",)]
    second.close()


def _idle_pipeline(now: float) -> tuple[Pipeline, StreamingExecutor, Clock]:
    """Partition 0 delivers every poll; partition 1 once, then nothing (idle after 1 s)."""

    def generate(partition: int, index: int) -> pl.DataFrame | None:
        if partition == 1 and index > 0:
            return None
        ts = 100_000 + index * 1_000 if partition == 0 else 0
        return pl.DataFrame({"ts": [ts], "k": ["a"]}, schema=SCHEMA)

    p = Pipeline()
    events = p.source(GeneratorSource(generate, partitions=2, schema=SCHEMA), timestamp="ts",
                      idle_timeout_ms=1_000)  # fmt: skip
    events.key_by("k").window(Tumbling(1_000)).agg(agg.count()).sink(MemorySink())
    clock = Clock(now)
    return p, StreamingExecutor(p, clock=clock), clock


def _watermark(executor: StreamingExecutor) -> int | None:
    return executor.metrics()["2:WindowAgg"].watermark


def test_idleness_keeps_its_age_in_another_clock() -> None:
    _, first, clock = _idle_pipeline(1_000_000.0)
    first.step()  # both partitions deliver
    clock.now = 1_000_500.0
    first.step()  # partition 1 silent for 500 ms: not idle yet, it holds the watermark at 0
    assert _watermark(first) == 0
    blob = first.snapshot().to_bytes()
    first.close()
    _, second, clock = _idle_pipeline(7.0)
    second.restore(ExecutorSnapshot.from_bytes(blob))
    clock.now = 7.0 + 499
    second.step()
    assert _watermark(second) == 0  # 999 ms of silence
    clock.now = 7.0 + 500
    second.step()
    held = _watermark(second)
    assert held is not None and held > 100_000  # idle: partition 0 alone moves it
    second.close()
