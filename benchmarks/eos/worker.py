"""Runs one Nexmark query from Kafka into a Kafka sink, in one of three modes, in its own process.

``python -m benchmarks.eos.worker QUERY --bootstrap H:P --topic OUT --mode MODE
[--interval-ms N --checkpoint-dir DIR]`` prints one JSON object: ``events`` (records read),
``rows`` (rows the sink wrote), ``wall_s`` and ``cpu_s`` (this process's user + system CPU,
librdkafka's threads included) from building the pipeline to the end of input (the final
checkpoint and commit included), and the checkpoints' ``checkpoints`` (count),
``pause_ms_total``, ``pause_ms_max`` and ``duration_ms_max``. Modes:

- ``none``: no checkpoints, the at-least-once sink (today's ``strom run`` without a directory);
- ``alo``: checkpoints every ``--interval-ms`` with ``guarantee="at-least-once"`` (the sink
  waits for every record's acknowledgement at each checkpoint);
- ``eos``: the same checkpoints with the transactional sink: one Kafka transaction per
  checkpoint, committed (EndTxn) as the checkpoint's decision.

The Kafka fetch kernels are compiled (or loaded from numba's cache) before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from benchmarks.nexmark.queries import build
from benchmarks.nexmark.worker import _cpu_s, warm_up
from strom.connectors import KafkaSink
from strom.runtime import StreamingExecutor
from strom.runtime.checkpoints import CheckpointedRun, CheckpointStore

__all__ = ["MODES", "Mode", "main", "run_query"]

Mode = Literal["none", "alo", "eos"]
MODES: tuple[Mode, ...] = ("none", "alo", "eos")


def _sink(bootstrap: str, topic: str, mode: Mode) -> KafkaSink:
    if mode == "eos":
        return KafkaSink(
            bootstrap, topic, guarantee="exactly-once", transactional_id=f"eos-bench.{topic}"
        )
    return KafkaSink(bootstrap, topic)


def run_query(
    query: str,
    bootstrap: str,
    topic: str,
    mode: Mode,
    *,
    interval_ms: int,
    checkpoint_dir: Path | None,
    batch_records: int,
    max_auction_ms: int,
) -> dict[str, Any]:
    """One timed run; the numbers :mod:`benchmarks.eos.worker` prints."""
    if mode != "none" and checkpoint_dir is None:
        raise ValueError(f"mode {mode} needs a checkpoint directory")
    cpu0, t0 = _cpu_s(), time.perf_counter()
    pipeline, sources = build(
        query,
        bootstrap,
        _sink(bootstrap, topic, mode),
        batch_records=batch_records,
        max_auction_ms=max_auction_ms,
    )
    executor = StreamingExecutor(pipeline)
    pauses: list[float] = []
    durations: list[float] = []
    if mode == "none":
        executor.run()
    else:
        assert checkpoint_dir is not None
        guarantee: Literal["exactly-once", "at-least-once"] = (
            "exactly-once" if mode == "eos" else "at-least-once"
        )
        run = CheckpointedRun(
            executor, CheckpointStore(checkpoint_dir), interval_ms=interval_ms, guarantee=guarantee
        )
        try:
            seen = 0
            more = True
            while more:
                more = run.step()
                if run.stats.count != seen:  # one more committed: its figures
                    seen = run.stats.count
                    pauses.append((run.stats.pause_us + run.stats.pre_commit_us) / 1000)
                    durations.append(run.stats.duration_us / 1000)
        finally:
            run.close()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    sink_rows = sum(m.rows_out for name, m in executor.metrics().items() if "Sink" in name)
    return {
        "events": sum(s.metrics().rows_in for s in sources),
        "rows": sink_rows,
        "wall_s": wall,
        "cpu_s": cpu,
        "checkpoints": len(pauses),
        "pause_ms_total": round(sum(pauses), 3),
        "pause_ms_max": round(max(pauses, default=0.0), 3),
        "duration_ms_max": round(max(durations, default=0.0), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.eos.worker")
    parser.add_argument("query")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--interval-ms", type=int, default=1_000)
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--batch-records", type=int, default=50_000)
    parser.add_argument("--max-auction-ms", type=int, required=True)
    args = parser.parse_args(argv)
    warm_cpu_s = warm_up()
    result = run_query(
        args.query,
        args.bootstrap,
        args.topic,
        args.mode,
        interval_ms=args.interval_ms,
        checkpoint_dir=args.checkpoint_dir,
        batch_records=args.batch_records,
        max_auction_ms=args.max_auction_ms,
    )
    json.dump(result | {"warm_up_cpu_s": warm_cpu_s}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
