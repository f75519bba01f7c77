"""Float keys in keyed state: NaN is one key (as it is one group to Polars' group_by), also when
its rows arrive in different micro-batches and across a snapshot and restore, so the streaming
results equal the bounded ones. (Each NaN used to open a key of its own in time windows.)"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from strom import Hopping, MemorySink, MemorySource, Pipeline, Session, Tumbling, agg, run_bounded
from strom.pipeline import ProcessContext, ProcessFunction, Stream
from strom.runtime import ExecutorSnapshot, StreamingExecutor

NAN = float("nan")
KEYS = [NAN, 1.0, -0.0, 0.0, None, NAN, 2.5]
ROWS = [{"ts": i * 7, "k": KEYS[i % len(KEYS)], "v": i} for i in range(60)]
BATCHES = [ROWS[i : i + 9] for i in range(0, len(ROWS), 9)]  # a NaN in most batches
SCHEMA = {"ts": pl.Int64(), "k": pl.Float64(), "v": pl.Int64()}


def _build(step: Any) -> tuple[Pipeline, MemorySink]:
    p = Pipeline()
    stream = p.source(MemorySource([BATCHES], schema=SCHEMA), timestamp="ts")
    step(stream).sink(out := MemorySink())
    return p, out


class RunningCount(ProcessFunction):
    """Per key: the count of its rows so far, emitted with each row."""

    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        count = ctx.value_state("count")
        count.update((count.value() or 0) + 1)
        ctx.emit({"k": ctx.key, "ts": row["ts"], "count": count.value()})


RUNNING = pl.Schema({"k": pl.Float64(), "ts": pl.Int64(), "count": pl.Int64()})

STEPS = {
    "tumbling": lambda s: s.key_by("k").window(Tumbling(50)).agg(agg.count(), agg.sum("v")),
    "hopping": lambda s: s.key_by("k").window(Hopping(60, 20)).agg(agg.count(), agg.sum("v")),
    "session": lambda s: s.key_by("k").window(Session(30)).agg(agg.count(), agg.sum("v")),
    "keyed agg": lambda s: s.key_by("k").agg(agg.count(), agg.sum("v")),
    "two keys": lambda s: (
        s.with_columns(g=pl.col("v") % 2).key_by("k", "g").window(Tumbling(50)).agg(agg.count())
    ),
    "process": lambda s: s.key_by("k").process(RunningCount(), output_schema=RUNNING),
}


def _final(frame: pl.DataFrame, step: str) -> pl.DataFrame:
    keys = [c for c in ("k", "g", "window_start") if c in frame.columns]
    if step == "keyed agg":  # the updating table: each key's last row
        frame = frame.unique(keys, keep="last", maintain_order=True)
    if step == "process":  # each key's last running count: its number of rows
        return frame.sort("ts").unique("k", keep="last").drop("ts").sort("k", nulls_last=False)
    return frame.drop("is_update").sort(keys, nulls_last=False)


def _streamed(step: Stream, snapshot_after: int | None) -> pl.DataFrame:
    p, out = _build(step)
    executor = StreamingExecutor(p)
    if snapshot_after is None:
        executor.run()
        return pl.concat(out.batches)
    for _ in range(snapshot_after):
        assert executor.step()
    blob = executor.snapshot().to_bytes()
    executor.close()
    q, rest = _build(step)
    again = StreamingExecutor(q)
    again.restore(ExecutorSnapshot.from_bytes(blob))
    again.run()
    return pl.concat(out.batches + rest.batches)


@pytest.mark.parametrize("name", list(STEPS))
@pytest.mark.parametrize("snapshot_after", [None, 3])
def test_nan_is_one_key_in_every_keyed_operator(name: str, snapshot_after: int | None) -> None:
    p, bounded = _build(STEPS[name])
    run_bounded(p)
    expected = _final(bounded.to_frame(), name)
    assert expected["k"].is_nan().sum() == expected.filter(pl.col("k").is_nan()).height
    got = _final(_streamed(STEPS[name], snapshot_after), name)
    assert_frame_equal(got, expected)
    nan_keys = got.filter(pl.col("k").is_nan())
    if "window_start" in got.columns:  # one row per NaN window, not one per NaN batch
        starts = nan_keys.select([c for c in ("g", "window_start") if c in got.columns])
        assert not starts.is_duplicated().any()
    else:
        assert nan_keys.height == 1


def test_a_process_function_sees_every_nan_row_under_one_key() -> None:
    p, out = _build(STEPS["process"])
    run_bounded(p)
    counts = _final(out.to_frame(), "process")
    groups = (
        pl.DataFrame(ROWS, schema=SCHEMA).group_by("k").len("count").sort("k", nulls_last=False)
    )
    # NaN, -0.0 and 0.0, None: one key each, as Polars groups them
    assert_frame_equal(counts, groups.with_columns(pl.col("count").cast(pl.Int64)))
