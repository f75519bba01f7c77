"""Watermark combination (pure) and idle partitions in the executor."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import (
    MAX_WATERMARK,
    StreamingExecutor,
    combine_watermarks,
    partition_watermark,
)

entry = st.tuples(st.integers(-(10**9), 10**9), st.booleans(), st.booleans())


@given(st.lists(entry, max_size=6), st.integers(-(10**9), 10**9))
def test_combine_is_min_of_active_and_monotone(
    parts: list[tuple[int, bool, bool]], previous: int
) -> None:
    combined = combine_watermarks(parts, previous)
    assert combined >= previous
    active = [w for w, idle, finished in parts if not idle and not finished]
    if all(finished for _, _, finished in parts):
        assert combined == MAX_WATERMARK
    elif not active:
        assert combined == previous
    else:
        assert combined == max(previous, min(active))


def test_partition_watermark() -> None:
    assert partition_watermark(10_000, 2_000) == 8_000
    assert partition_watermark(None, 0) < -(10**18)


def _idle_pipeline(idle_timeout_ms: int | None) -> tuple[Pipeline, MemorySink]:
    rows = [{"k": "a", "ts": t} for t in (1_000, 12_000, 25_000, 38_000)]
    busy: list[object] = [[r] for r in rows]
    quiet: list[object] = [[{"k": "b", "ts": 500}], *([None] * 6)]
    p = Pipeline()
    src = MemorySource([busy, quiet])  # type: ignore[list-item]
    stream = p.source(src, timestamp="ts", idle_timeout_ms=idle_timeout_ms)
    stream.key_by("k").window(Tumbling(10_000)).agg(agg.count()).sink(sink := MemorySink())
    return p, sink


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 500.0  # every poll takes half a second of processing time
        return self.now


def test_idle_partition_does_not_stall_the_watermark() -> None:
    p, sink = _idle_pipeline(idle_timeout_ms=2_000)
    ex = StreamingExecutor(p, clock=FakeClock())
    for _ in range(4):
        ex.step()
    # the quiet partition went idle, so windows of the busy one fired before the end
    assert sink.batches and sink.to_frame()["window_end"].min() == 10_000
    assert ex.metrics()["1:KeyBy"].rows_in == 5


def test_without_idle_timeout_a_quiet_partition_holds_the_watermark() -> None:
    p, sink = _idle_pipeline(idle_timeout_ms=None)
    ex = StreamingExecutor(p, clock=FakeClock())
    for _ in range(4):
        ex.step()
    assert not sink.batches
    ex.run()
    assert sorted(sink.to_frame()["window_end"].to_list()) == [
        10_000,
        10_000,
        20_000,
        30_000,
        40_000,
    ]
