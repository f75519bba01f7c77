"""Window state at scale: tumbling count+sum over millions of distinct keys, session windows over
millions of keys whose sessions span several batches, and a hopping window over few keys with many
events each, through the streaming executor.

Each line reports wall and CPU seconds of the run alone (input generation and the reference check
are excluded) and ``correct``: the results equal a Polars ``group_by`` over the same events.

Run: ``python -m benchmarks.window_state [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from typing import Any

import polars as pl

from strom import __version__
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Hopping, Pipeline, Session, Tumbling, WindowSpec, agg
from strom.runtime import StreamingExecutor

__all__ = ["hopping_few_keys", "run", "session_distinct_keys", "tumbling_distinct_keys"]

Emit = Callable[[dict[str, Any]], None]


def _batches(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [frame.slice(i, size) for i in range(0, frame.height, size)]


def _run(
    frame: pl.DataFrame, batch_rows: int, spec: WindowSpec
) -> tuple[pl.DataFrame, float, float]:
    p = Pipeline()
    src = MemorySource([_batches(frame, batch_rows)])
    stream = p.source(src, timestamp="ts").key_by("k").window(spec)
    stream.agg(agg.count(), agg.sum("v")).sink(sink := MemorySink())
    ex = StreamingExecutor(p)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    ex.run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return sink.to_frame(), wall, cpu


def _reference(frame: pl.DataFrame, size: int, slide: int) -> pl.DataFrame:
    starts = [(pl.col("ts") - pl.col("ts") % slide) - j * slide for j in range(-(-size // slide))]
    return (
        frame.with_columns(pl.concat_list(starts).alias("window_start"))
        .explode("window_start")
        .filter(pl.col("window_start") + size > pl.col("ts"))
        .group_by("k", "window_start")
        .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("v").sum().alias("sum_v"))
    )


def _line(
    name: str, params: dict[str, Any], events: int, wall: float, cpu: float, correct: bool
) -> dict[str, Any]:
    return {
        "benchmark": name,
        "system": f"strom {__version__}",
        "params": params,
        "events": events,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "events_per_s": round(events / wall),
        "events_per_core_s": round(events / cpu) if cpu else None,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "correct": correct,
    }


def _check(results: pl.DataFrame, expected: pl.DataFrame) -> bool:
    if results.height != expected.height or results["is_update"].any():
        return False
    cols = ["k", "window_start", "count", "sum_v"]
    return (
        results.select(cols)
        .sort("k", "window_start")
        .equals(expected.select(cols).sort("k", "window_start"))
    )


def tumbling_distinct_keys(keys: int, batch_rows: int = 1_000_000) -> dict[str, Any]:
    """``keys`` distinct keys, one event each, all in one 60 s tumbling window."""
    frame = pl.DataFrame(
        {
            "k": pl.int_range(keys, dtype=pl.Int64, eager=True),
            "ts": pl.repeat(1_000, keys, dtype=pl.Int64, eager=True),
            "v": pl.int_range(keys, dtype=pl.Int64, eager=True) % 1_000,
        }
    )
    results, wall, cpu = _run(frame, batch_rows, Tumbling(60_000))
    correct = _check(results, _reference(frame, 60_000, 60_000))
    params = {"window": "tumbling 60s", "aggs": "count,sum", "keys": keys, "batch": batch_rows}
    return _line("window_state.tumbling_distinct_keys", params, keys, wall, cpu, correct)


def session_distinct_keys(keys: int, per_key: int = 3) -> dict[str, Any]:
    """``keys`` keys with ``per_key`` events 1 s apart in 5 s-gap sessions; one batch per second
    of event time, so every session grows over ``per_key`` batches before it closes."""
    gap = 5_000
    k = pl.int_range(keys, dtype=pl.Int64, eager=True)
    frame = pl.concat(
        [pl.DataFrame({"k": k, "ts": pl.repeat(j * 1_000, keys, eager=True), "v": k % 7 + j})
         for j in range(per_key)]
    )  # fmt: skip
    results, wall, cpu = _run(frame, keys, Session(gap))
    expected = frame.group_by("k").agg(
        pl.lit(0, pl.Int64).alias("window_start"),
        pl.len().cast(pl.Int64).alias("count"),
        pl.col("v").sum().alias("sum_v"),
    )
    ends_right = results.height == 0 or bool(
        (results["window_end"] == (per_key - 1) * 1_000 + gap).all()
    )
    correct = ends_right and _check(results, expected)
    params = {"window": "session 5s", "aggs": "count,sum", "keys": keys, "batch": keys}
    return _line("window_state.session_distinct_keys", params, frame.height, wall, cpu, correct)


def hopping_few_keys(events: int, keys: int = 100, batch_rows: int = 100_000) -> dict[str, Any]:
    """``keys`` keys, 100 events per millisecond, 10 s windows every 2 s (5 windows per event)."""
    i = pl.int_range(events, dtype=pl.Int64, eager=True)
    frame = pl.DataFrame({"k": i % keys, "ts": i // 100, "v": i % 97})
    results, wall, cpu = _run(frame, batch_rows, Hopping(10_000, 2_000))
    correct = _check(results, _reference(frame, 10_000, 2_000))
    params = {"window": "hopping 10s/2s", "aggs": "count,sum", "keys": keys, "batch": batch_rows}
    return _line("window_state.hopping_few_keys", params, events, wall, cpu, correct)


def run(quick: bool, emit: Emit) -> None:
    """Run the suite; ``emit`` receives one JSON-able result dict per measurement."""
    for keys in (1_000_000,) if quick else (1_000_000, 10_000_000):
        emit(tumbling_distinct_keys(keys))
    for keys in (1_000_000,) if quick else (1_000_000, 5_000_000):
        emit(session_distinct_keys(keys))
    emit(hopping_few_keys(2_000_000 if quick else 10_000_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    run(args.quick, lambda line: print(json.dumps(line), flush=True))


if __name__ == "__main__":
    main()
