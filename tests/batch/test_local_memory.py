"""The local engine holds its memory budget on an input several times larger than it.

``strom run --engine local --memory 288MiB`` over ~900 MB of uncompressed Parquet (3.1x the
budget); the test samples the memory (anonymous) of the whole process tree (the driver, its workers
and the multiprocessing resource tracker) every 10 ms while it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from strom.batch.memory import parse_size, resident, tree_resident

PIPELINE = """
from strom import FileSink, Pipeline, Tumbling, agg
from strom.connectors import FileSource

pipeline = Pipeline()
events = pipeline.source(FileSource({glob!r}, "parquet"), timestamp="ts")
events.key_by("k").window(Tumbling(60_000)).agg(
    agg.count(), agg.sum("v"), agg.max("w"), agg.mean("w")
).sink(FileSink({out!r}, "parquet"))
"""


def test_an_input_three_times_the_memory_budget_completes_within_it(tmp_path: Path) -> None:
    budget = parse_size("288MiB")
    data = tmp_path / "in"
    data.mkdir()
    rows = 250_000
    total = 0
    files = 0
    while total < 3 * budget + 16 * 1024**2:
        rng = np.random.default_rng(files)
        pl.DataFrame(
            {
                "ts": rng.integers(0, 3_600_000, rows),
                "k": rng.integers(0, 1_000, rows),
                "v": rng.random(rows),
                "w": rng.random(rows),
            }
        ).write_parquet(data / f"f{files:04d}.parquet", compression="uncompressed")
        total += (data / f"f{files:04d}.parquet").stat().st_size
        files += 1
    out = tmp_path / "out"
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text(PIPELINE.format(glob=str(data / "*.parquet"), out=str(out)))
    command = [sys.executable, "-m", "strom", "run", str(pipeline), "--engine", "local"]
    command += ["--workers", "1", "--memory", "288MiB", "--progress", "none"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_resident(process.pid))
        time.sleep(0.01)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert total >= 3 * budget
    assert 0 < peak < budget, f"peak memory {peak / 2**20:.0f} MiB over {total / 2**20:.0f} MiB"
    assert (out / "_SUCCESS").exists()
    result = pl.read_parquet(out / "part-*.parquet")
    assert result.height == 60 * 1_000
    assert result.get_column("count").sum() == files * rows


def test_resident_memory_counts_what_a_process_allocates() -> None:
    """``resident`` reads a process's anonymous memory: it grows by what the process allocates,
    stays within its RSS, and a process that is gone reads as 0."""
    before = resident(os.getpid())
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, every page touched
    after = resident(os.getpid())
    statm_rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert before > 0 and after - before >= 60 * 2**20 and after <= statm_rss
    del block
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert resident(gone.pid) == 0
