"""The pipeline the checkpoint tests run with ``strom run --checkpoint-dir`` (and kill).

A seeded GeneratorSource (3 partitions, ``CKPT_BATCHES`` batches each, slightly out of order)
feeds a keyed tumbling window, a keyed process function (state and event-time timers) and a
keyed aggregation without a window (an updating table); each writes to a
:class:`StagedFileSink` under ``CKPT_OUT``. ``CKPT_VARIANT=changed`` builds the same
pipeline with another window size (a checkpoint of the first must be refused);
``CKPT_DECIDER=1`` makes the process function's sink decide each checkpoint's commit.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import polars as pl
from ckpt_sink import DecidingStagedFileSink, StagedFileSink, install_store_crash

from strom import GeneratorSource, Pipeline, ProcessContext, ProcessFunction, Tumbling, agg

SCHEMA = pl.Schema({"ts": pl.Int64(), "key": pl.String(), "v": pl.Int64()})
OUTPUT = {"key": pl.String, "ts": pl.Int64, "max": pl.Int64, "n": pl.Int64, "why": pl.String}


def generate(partition: int, index: int) -> pl.DataFrame:
    rng = random.Random(partition * 1_000_003 + index)
    rows = [
        (index * 500 + rng.randrange(800), f"k{rng.randrange(7)}", rng.randrange(1_000))
        for _ in range(30)
    ]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


class RunningMax(ProcessFunction):
    """Per key: the largest value so far and the count; emits when the max grows, and from an
    event-time timer 5 s after each key's first element."""

    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        best, count = ctx.value_state("best"), ctx.value_state("count")
        n = (count.value() or 0) + 1
        count.update(n)
        if n == 1:
            ctx.register_event_time_timer(row["ts"] + 5_000)
        if best.value() is None or row["v"] > best.value():
            best.update(row["v"])
            ctx.emit({"key": ctx.key, "ts": row["ts"], "max": row["v"], "n": n, "why": "max"})

    def on_timer(self, timestamp: int, ctx: ProcessContext) -> None:
        n, best = ctx.value_state("count").value(), ctx.value_state("best").value()
        ctx.emit({"key": ctx.key, "ts": timestamp, "max": best, "n": n, "why": "timer"})


def build_pipeline() -> Pipeline:
    if os.environ.get("CKPT_CRASH", "").startswith("store:"):
        install_store_crash()
    out = Path(os.environ["CKPT_OUT"])
    batches = int(os.environ.get("CKPT_BATCHES", "200"))
    size = 3_000 if os.environ.get("CKPT_VARIANT") == "changed" else 2_000
    p = Pipeline()
    events = p.source(
        GeneratorSource(generate, partitions=3, batches=batches, schema=SCHEMA),
        timestamp="ts",
        max_out_of_orderness_ms=1_000,
    )
    windows = events.key_by("key").window(Tumbling(size)).agg(agg.count(), agg.sum("v"))
    windows.sink(StagedFileSink(out / "windows"))
    process_sink = DecidingStagedFileSink if os.environ.get("CKPT_DECIDER") else StagedFileSink
    events.key_by("key").process(RunningMax(), output_schema=OUTPUT).sink(
        process_sink(out / "process")
    )
    table = events.key_by("key").agg(agg.count(), agg.sum("v"), agg.last("v"))
    table.sink(StagedFileSink(out / "table"))
    return p
