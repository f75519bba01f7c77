"""The ML benchmark's pipeline on strom's streaming runtime, in a process of its own.

``python -m benchmarks.ml.worker --bootstrap H:P --input IN --output OUT --store DIR
[--bounded --stats FILE.json]``: Kafka → :data:`~benchmarks.ml.data.VIEW` (the per-device
tumbling window) → ``predict`` with the store's ``production`` model (one call per micro-batch)
→ Kafka, the predictions keyed by device. Bounded, the source ends at the topic's end offsets
and the stats file gets ``events``, ``wall_s`` and ``cpu_s`` (this process, librdkafka's threads
included) from the built pipeline to the end of input; compiling (or loading from numba's cache)
the Kafka fetch kernels comes before, as in the Nexmark worker. Otherwise it runs until killed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from benchmarks.ml.children._ml_common import Clock
from benchmarks.ml.data import END_PREFIX, EVENT, MODEL, VIEW
from benchmarks.nexmark.worker import warm_up
from strom import KafkaSink, KafkaSource, Pipeline
from strom.ml import ModelStore
from strom.runtime import run_streaming

__all__ = ["build", "main"]


def build(
    bootstrap: str, topics: tuple[str, str], store: ModelStore, bounded: bool
) -> tuple[Pipeline, KafkaSource]:
    source = KafkaSource(bootstrap, topics[0], schema=EVENT, bounded=bounded)
    p = Pipeline()
    readings = p.source(source, timestamp="ts", max_out_of_orderness_ms=0)
    # the end records only move event time past the last windows
    windows = VIEW.apply(
        readings.select(*EVENT).filter(~pl.col("device").str.starts_with(END_PREFIX))
    )
    scores = windows.predict(store, MODEL, output="score", feature_version=VIEW.version)
    scores.select("device", "window_end", "score").sink(
        KafkaSink(bootstrap, topics[1], key="device")
    )
    return p, source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.ml.worker")
    for name in ("--bootstrap", "--input", "--output"):
        parser.add_argument(name, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--bounded", action="store_true")
    parser.add_argument("--stats", type=Path)
    args = parser.parse_args(argv)
    if args.bounded and args.stats is None:
        parser.error("--bounded needs --stats FILE")
    warm_up()
    store = ModelStore(args.store, create=False)
    pipeline, source = build(args.bootstrap, (args.input, args.output), store, args.bounded)
    plan = pipeline.plan()  # loads and verifies the model once, before the clock starts
    clock = Clock()
    run_streaming(plan)
    if args.stats is not None:
        clock.write(args.stats, source.metrics().rows_in)


if __name__ == "__main__":
    main()
