"""What a checkpoint costs against state size: pause, pre-commit, write, duration, recovery.

A keyed tumbling window holds ``keys`` keys (count, sum, max) in one window that never closes; a
few single-process checkpoints are taken (into a temporary directory on the local disk), then a
fresh executor recovers from the last one: ``recovery`` is from the start of recovery (lock,
manifest, sha256 check, state files read and decoded) to a restored executor. ``pause`` is
what the pipeline waits for (the state copy and the sinks' pre-commit); ``write`` is the
writer thread's (serialization, files, fsync) while the pipeline runs on; ``duration`` is
snapshot to commit. Each size runs in a process of its own, whose peak RSS is reported.

Run: ``python -m benchmarks.checkpoint_cost [--json] [KEYS ...]``; ``strom bench eos`` runs it
at :data:`SIZES_MB` through :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import StreamingExecutor
from strom.runtime.checkpoints import CheckpointedRun, CheckpointStore

__all__ = ["BYTES_PER_KEY", "SIZES_MB", "keys_for", "measure", "run"]

WINDOW_MS = 3_600_000
#: State bytes per key of this pipeline (key, window bounds, flags, count, sum, max).
BYTES_PER_KEY = 56
#: The issue's state sizes: 1 MB, 100 MB, 1 GB (``--quick``: the first two).
SIZES_MB = (1, 100, 1_000)
TIMEOUT_S = 1_800.0

Emit = Callable[[dict[str, Any]], None]


def keys_for(megabytes: float) -> int:
    """Keys whose state is about ``megabytes`` MB."""
    return max(1, round(megabytes * 1e6 / BYTES_PER_KEY))


def _pipeline(keys: int) -> Pipeline:
    i = pl.int_range(keys, dtype=pl.Int64, eager=True)
    events = pl.DataFrame({"k": i, "ts": i % 1_000, "v": (i * 7919) % 1_000})
    p = Pipeline()
    source = p.source(MemorySource([[events, *[None] * 10]]), timestamp="ts")
    source.key_by("k").window(Tumbling(WINDOW_MS)).agg(
        agg.count(), agg.sum("v"), agg.max("v")
    ).sink(MemorySink())
    return p


def measure(keys: int, repeats: int = 3) -> dict[str, float]:
    """Median milliseconds of each part over ``repeats`` checkpoints, the state's MB, and the
    recovery time of the last checkpoint."""
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        executor = StreamingExecutor(_pipeline(keys))
        run = CheckpointedRun(executor, CheckpointStore(tmp), guarantee="at-least-once")
        run.start()
        executor.step()  # the state is loaded
        parts: dict[str, list[float]] = {"pause": [], "pre_commit": [], "write": [], "duration": []}
        for _ in range(repeats):
            run.checkpoint()
            s = run.stats
            parts["pause"].append((s.pause_us + s.pre_commit_us) / 1000)
            parts["pre_commit"].append(s.pre_commit_us / 1000)
            parts["write"].append(s.write_us / 1000)
            parts["duration"].append(s.duration_us / 1000)
        size = run.stats.size
        run._failed = True  # no final checkpoint: only what was measured
        run.close()
        del run, executor  # the recovering executor does not share the machine's memory with it
        fresh = StreamingExecutor(_pipeline(keys))
        began = time.perf_counter()
        again = CheckpointedRun(fresh, CheckpointStore(tmp), guarantee="at-least-once")
        again.start()
        recovery = (time.perf_counter() - began) * 1000
        restored = sum(op.state_size() for op in fresh.stateful_operators().values())
        if restored != keys:
            raise RuntimeError(f"recovered {restored} keys, not {keys}")
        again._failed = True
        again.close()
    out = {name: statistics.median(values) for name, values in parts.items()}
    return {"keys": keys, "state_mb": size / 1e6, **out, "recovery": recovery}


def run(sizes_mb: tuple[float, ...], emit: Emit) -> None:
    """One ``eos.checkpoint`` line per size, each measured in a fresh process."""
    for megabytes in sizes_mb:
        keys = keys_for(megabytes)
        label = {"target_mb": megabytes, "keys": keys}
        argv = [sys.executable, "-m", "benchmarks.checkpoint_cost", "--json", str(keys)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            emit({"benchmark": "eos.checkpoint", "params": label, "failed": "timed out"})
            continue
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            emit({"benchmark": "eos.checkpoint", "params": label,
                  "failed": f"exited with {done.returncode}: {tail}"})  # fmt: skip
            continue
        m = json.loads(done.stdout.strip().splitlines()[-1])
        emit(
            {
                "benchmark": "eos.checkpoint",
                "params": label,
                "state_mb": round(m["state_mb"], 1),
                "pause_ms": round(m["pause"], 1),
                "write_ms": round(m["write"], 1),
                "duration_ms": round(m["duration"], 1),
                "recovery_ms": round(m["recovery"], 1),
                "peak_rss_mb": m["peak_rss_mb"],
            }
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.checkpoint_cost")
    parser.add_argument("--json", action="store_true", help="one JSON object per size")
    parser.add_argument("keys", type=int, nargs="*")
    args = parser.parse_args(argv)
    sizes = args.keys or [30_000, 300_000, 3_000_000]
    if not args.json:
        print(f"{'keys':>10} {'state MB':>9} {'pause ms':>9} {'pre-commit':>10} {'write ms':>9} "
              f"{'total ms':>9} {'recovery ms':>11}")  # fmt: skip
    for keys in sizes:
        m = measure(keys, repeats=3 if keys < 10_000_000 else 2)
        if args.json:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(json.dumps(m | {"peak_rss_mb": rss}), flush=True)
            continue
        print(f"{m['keys']:>10,} {m['state_mb']:>9.1f} {m['pause']:>9.1f} {m['pre_commit']:>10.2f} "
              f"{m['write']:>9.1f} {m['duration']:>9.1f} {m['recovery']:>11.1f}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
