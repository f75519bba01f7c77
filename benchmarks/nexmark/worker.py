"""Runs one Nexmark query on strom's streaming runtime, in its own process.

``python -m benchmarks.nexmark.worker QUERY --bootstrap H:P --output OUT.parquet`` prints one JSON
object: ``events`` (records read from Kafka), ``rows`` (output rows), ``wall_s`` and ``cpu_s``
(this process's user + system CPU, librdkafka's threads included) of the run alone, from
building the pipeline to the end of input; interpreter start-up and writing the output are
excluded, and so is compiling (or loading from cache) the Kafka fetch kernels, reported as
``warm_up_cpu_s``. ``--profile FILE`` runs it under cProfile and saves the stats.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.nexmark.queries import build
from strom.connectors import MemorySink
from strom.runtime import run_streaming

__all__ = ["main", "run_query"]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_up() -> float:
    """Compile (or load from numba's cache) the Kafka fetch kernels (record batches, JSON), if
    this engine has them, before the clock starts; returns the CPU seconds it took."""
    cpu0 = _cpu_s()
    try:
        from strom.connectors.kafka.native_json import warm_up as warm_kernel
    except ImportError:
        return 0.0
    warm_kernel()
    return _cpu_s() - cpu0


def run_query(
    query: str, bootstrap: str, batch_records: int, max_auction_ms: int
) -> tuple[dict[str, Any], MemorySink]:
    sink = MemorySink()
    cpu0, t0 = _cpu_s(), time.perf_counter()
    pipeline, sources = build(
        query, bootstrap, sink, batch_records=batch_records, max_auction_ms=max_auction_ms
    )
    run_streaming(pipeline)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    events = sum(s.metrics().rows_in for s in sources)
    rows = sum(b.height for b in sink.batches)
    return {"events": events, "rows": rows, "wall_s": wall, "cpu_s": cpu}, sink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.nexmark.worker")
    parser.add_argument("query")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--batch-records", type=int, default=50_000)
    parser.add_argument("--max-auction-ms", type=int, required=True)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    warm_cpu_s = warm_up()
    if args.profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        result, sink = profiler.runcall(
            run_query, args.query, args.bootstrap, args.batch_records, args.max_auction_ms
        )
        profiler.dump_stats(args.profile)
    else:
        result, sink = run_query(
            args.query, args.bootstrap, args.batch_records, args.max_auction_ms
        )
    sink.to_frame().write_parquet(args.output)
    json.dump(result | {"warm_up_cpu_s": warm_cpu_s}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
