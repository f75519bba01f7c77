"""What a checkpoint costs against state size: pause, pre-commit, write, duration, recovery.

A keyed tumbling window holds ``keys`` keys (count, sum, max) in one window that never closes; one
single-process checkpoint is taken (into a temporary directory on the local disk), then a fresh
executor recovers from it. Run: ``python -m benchmarks.checkpoint_cost [keys ...]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import StreamingExecutor
from strom.runtime.checkpoints import CheckpointedRun, CheckpointStore

WINDOW_MS = 3_600_000


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
    recovery time (load, verify, restore) of the last checkpoint."""
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        executor = StreamingExecutor(_pipeline(keys))
        run = CheckpointedRun(executor, CheckpointStore(tmp), guarantee="at-least-once")
        run.start()
        executor.step()  # the state is loaded
        parts: dict[str, list[float]] = {"pause": [], "pre_commit": [], "write": [], "duration": []}
        for _ in range(repeats):
            run.checkpoint()
            s = run.stats
            parts["pause"].append(s.pause_us / 1000)
            parts["pre_commit"].append(s.pre_commit_us / 1000)
            parts["write"].append(s.write_us / 1000)
            parts["duration"].append(s.duration_us / 1000)
        size = run.stats.size
        run._failed = True  # no final checkpoint: only what was measured
        run.close()
        fresh = StreamingExecutor(_pipeline(keys))
        began = time.perf_counter()
        again = CheckpointedRun(fresh, CheckpointStore(tmp), guarantee="at-least-once")
        again.start()
        recovery = (time.perf_counter() - began) * 1000
        restored = sum(op.state_size() for op in fresh.stateful_operators().values())
        assert restored == keys, (restored, keys)
        again._failed = True
        again.close()
    out = {name: statistics.median(values) for name, values in parts.items()}
    return {"keys": keys, "state_mb": size / 1e6, **out, "recovery": recovery}


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [30_000, 300_000, 3_000_000]
    print(f"{'keys':>10} {'state MB':>9} {'pause ms':>9} {'pre-commit':>10} {'write ms':>9} "
          f"{'total ms':>9} {'recovery ms':>11}")  # fmt: skip
    for keys in sizes:
        m = measure(keys)
        print(f"{m['keys']:>10,} {m['state_mb']:>9.1f} {m['pause']:>9.1f} {m['pre_commit']:>10.2f} "
              f"{m['write']:>9.1f} {m['duration']:>9.1f} {m['recovery']:>11.1f}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
