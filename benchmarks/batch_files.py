"""The 2,000-file group-by: strom's local engine beside the single-process bounded runner,
Polars (lazy, streaming engine) and DuckDB, on the same Parquet files in the same run.

20 M rows in 2,000 Parquet files (~250 MB), grouped by a key of 100 or 100,000 values: count,
sum and mean (in strom: a keyed tumbling window spanning all time, the plan API's aggregation).
Each system runs in its own process; the parent times it (wall time after imports, reported by
the child) and samples the anonymous memory (:func:`strom.batch.memory.resident`) of the child's
whole process tree every 10 ms. Every answer is checked against DuckDB's.

Run: ``strom bench batch`` (after TPC-H) or ``python -m benchmarks.batch_files [--quick]``
(quick: 200 files, 2 M rows); writes ``benchmarks/results/batch-files[-quick].md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.report import machine_summary
from strom.batch.memory import tree_resident

__all__ = ["main", "run", "write_markdown"]

SYSTEMS = ("strom local", "strom bounded", "polars", "duckdb")
KEYS = {100: "k100", 100_000: "k100k"}
CACHE = Path.home() / ".cache" / "strom-bench" / "batch-files"


def generate(directory: Path, files: int, rows: int) -> Path:
    """Seeded files (made once per size, kept in ``directory``)."""
    marker = directory / f"done-{files}-{rows}"
    if marker.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    per_file = rows // files
    for i in range(files):
        rng = np.random.default_rng(i)
        pl.DataFrame(
            {
                "ts": rng.integers(0, 10**9, per_file),
                "k100": rng.integers(0, 100, per_file),
                "k100k": rng.integers(0, 100_000, per_file),
                "v": rng.random(per_file),
            }
        ).write_parquet(directory / f"part-{i:05d}.parquet")
    marker.touch()
    return directory


def child(system: str, glob: str, key: str) -> None:
    """Run one system (in this process) and print its result's digest and wall time."""
    import duckdb

    from strom import MemorySink, Pipeline, Tumbling, agg, run_bounded
    from strom.batch import run_local
    from strom.connectors import FileSource

    start = time.perf_counter()
    if system.startswith("strom"):
        sink = MemorySink()
        p = Pipeline()
        events = p.source(FileSource(glob, "parquet"), timestamp="ts")
        events.key_by(key).window(Tumbling(10**12)).agg(
            agg.count(), agg.sum("v"), agg.mean("v")
        ).sink(sink)
        if system == "strom local":
            run_local(p)
        else:
            run_bounded(p)
        result = sink.to_frame().select(key, "count", "sum_v", "mean_v")
    elif system == "polars":
        result = (
            pl.scan_parquet(glob)
            .group_by(key)
            .agg(pl.len().alias("count"), pl.col("v").sum().alias("sum_v"), pl.col("v").mean())
            .rename({"v": "mean_v"})
            .collect(engine="streaming")
        )
    else:
        con = duckdb.connect(config={"threads": os.cpu_count() or 1})
        sql = f"select {key}, count(*) as count, sum(v) as sum_v, avg(v) as mean_v "
        sql += f"from read_parquet('{glob}') group by {key}"
        result = pl.from_arrow(con.sql(sql).arrow())  # type: ignore[assignment]
    wall = time.perf_counter() - start
    digest = result.sort(key).with_columns(pl.col("sum_v", "mean_v").round(6))
    print(json.dumps({"wall_s": wall, "digest": digest.hash_rows().sum()}))


def measure(system: str, glob: str, key: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.batch_files", "--child", system, glob, key]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_resident(process.pid))
        time.sleep(0.01)
    out, _ = process.communicate()
    if process.returncode != 0:
        return {"system": system, "failed": process.returncode}
    record: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {"system": system, "peak_resident_mib": peak / 2**20, **record}


def run(quick: bool, emit: Callable[[dict[str, Any]], None]) -> None:
    """Both group-bys on every system; ``emit`` gets one line per run
    (``benchmark="batch.groupby"``, ``correct``: the digest equals DuckDB's)."""
    files, rows = (200, 2_000_000) if quick else (2_000, 20_000_000)
    directory = generate(CACHE / f"{files}-{rows}", files, rows)
    glob = str(directory / "*.parquet")
    size = sum(f.stat().st_size for f in directory.glob("*.parquet"))
    for groups, key in KEYS.items():
        results = [measure(s, glob, key) for s in SYSTEMS]
        reference = next(r for r in results if r["system"] == "duckdb").get("digest")
        for r in results:
            params = {"files": files, "rows": rows, "mb": round(size / 1e6), "groups": groups}
            if "failed" not in r:
                r["correct"] = r.pop("digest") == reference
            emit({"benchmark": "batch.groupby", "params": params, **r})


def write_markdown(lines: list[dict[str, Any]], path: Path) -> None:
    """The run's lines as the ``batch-files`` report."""
    p = lines[0]["params"]
    out = [
        f"# Batch: {p['files']:,} Parquet files, {p['rows']:,} rows, {p['mb']} MB",
        "",
        f"Taken {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine_summary()}.",
        "Wall time after imports; peak anonymous memory of the process tree (sampled every 10 ms); "
        "`correct`: the answer equals DuckDB's.",
        "",
        "| groups | system | wall s | peak anon MiB | correct |",
        "|---|---|---|---|---|",
    ]
    for r in lines:
        groups = r["params"]["groups"]
        if "failed" in r:
            out.append(f"| {groups:,} | {r['system']} | failed ({r['failed']}) | | |")
            continue
        out.append(
            f"| {groups:,} | {r['system']} | {r['wall_s']:.2f} | "
            f"{r['peak_resident_mib']:.0f} | {r['correct']} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("SYSTEM", "GLOB", "KEY"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    lines: list[dict[str, Any]] = []

    def emit(line: dict[str, Any]) -> None:
        lines.append(line)
        print(json.dumps(line), flush=True)

    run(args.quick, emit)
    name = "batch-files-quick.md" if args.quick else "batch-files.md"
    out = Path(__file__).parent / "results" / name
    write_markdown(lines, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
