"""What a lost worker costs the local engine: TPC-H queries clean, then with one worker SIGKILLed
halfway through, on the same files in the same run.

The issue's target: a run with one task killed takes at most 1.5x a clean one. The kill comes
from outside, as an OOM killer's would: this harness starts the query in a child process, which
says when its imports are done and the run starts; halfway through the clean run's median wall
time the harness sends ``SIGKILL`` to one of the child's worker processes (a ``multiprocessing``
spawn child; the resource tracker is left alone). The driver notices the dead worker, starts
another and runs the lost task again from its inputs (lineage); the answer must equal the clean
run's. A kill that lands after the workers finished (no retry reported) is reported as missed,
not counted as a fast recovery.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.tpch.data import CACHE, FILES, LARGE, SMALL, generate, table_glob
from benchmarks.tpch.queries import QUERIES, strom_pipeline
from benchmarks.tpch.runner import same_answer

__all__ = ["main", "run", "write_markdown"]

STARTED = "started"
"""The line a child prints when its imports are done and the run begins."""

TIMEOUT_S = 1_800.0
"""A run that takes longer is killed and reported as failed (it hung)."""


def child(query: str, directory: Path, out: Path) -> None:
    """Run ``query`` on the local engine in this process; write its answer to ``out`` and print
    one JSON line (wall seconds after imports, retries, tasks)."""
    from strom import MemorySink
    from strom.batch import run_local

    glob = {t: table_glob(directory, t) for t in (*LARGE, *SMALL)}
    pipeline, stream = strom_pipeline(query, glob.__getitem__)
    sink = MemorySink()
    stream.sink(sink)
    print(STARTED, flush=True)
    start = time.perf_counter()
    report = run_local(pipeline, work_dir=out.parent / f"work-{out.stem}")
    wall = time.perf_counter() - start
    sink.to_frame().write_parquet(out)
    record = {"wall_s": wall, "retries": report.retries, "tasks": report.tasks}
    print(json.dumps({**record, "workers": report.workers}))


def _workers(pid: int) -> list[int]:
    """The local engine's worker processes under ``pid``: spawned children running
    ``spawn_main`` (not the resource tracker)."""
    from strom.batch.memory import tree

    found = []
    for p in tree(pid)[1:]:
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(p)
    return found


def _unsupported(query: str, directory: Path) -> str | None:
    """Why the local engine cannot run ``query`` (its planner's PlanError), or None."""
    from strom import MemorySink, PlanError
    from strom.batch.planner import lower

    glob = {t: table_glob(directory, t) for t in (*LARGE, *SMALL)}
    pipeline, stream = strom_pipeline(query, glob.__getitem__)
    stream.sink(MemorySink())
    try:
        lower(pipeline.plan())
    except PlanError as exc:
        return str(exc)
    return None


def attempt(query: str, directory: Path, out: Path, kill_after_s: float | None) -> dict[str, Any]:
    """One child run; with ``kill_after_s``, one worker is SIGKILLed that long after the run
    started (or as soon as one is alive, if none is yet). The child's JSON line plus ``killed``
    (the pid, or None when the run ended first)."""
    command = [sys.executable, "-m", "benchmarks.tpch.faults", "--child", query]
    # stderr (the engine's progress lines) to a file: a pipe nobody reads could fill and stall
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [*command, str(directory), str(out)], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            result = _watch(process, kill_after_s)
        finally:
            if process.poll() is None:  # a hung run: the benchmark must not hang with it
                process.kill()
                process.wait()
        if "failed" in result:
            stderr.seek(0)
            result["failed"] += f": {_last(stderr.read())}"
        return result


def _watch(process: subprocess.Popen[str], kill_after_s: float | None) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != STARTED:
        process.wait(timeout=TIMEOUT_S)
        return {"failed": f"exit {process.returncode} before the run started"}
    killed = None
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        deadline = time.monotonic() + 5.0  # the workers may still be starting
        while killed is None and process.poll() is None and time.monotonic() < deadline:
            workers = _workers(process.pid)
            if workers:
                with contextlib.suppress(ProcessLookupError):  # it ended just now
                    os.kill(workers[0], signal.SIGKILL)
                    killed = workers[0]
            else:
                time.sleep(0.005)
    rest, _ = process.communicate(timeout=TIMEOUT_S)
    if process.returncode != 0:
        return {"failed": f"exit {process.returncode}"}
    record: dict[str, Any] = json.loads(rest.strip().splitlines()[-1])
    return {**record, "killed": killed}


def _last(stderr: str) -> str:
    """The last line of a child's stderr (its exception), for the report."""
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else "no message"


def run(
    quick: bool,
    emit: Callable[[dict[str, Any]], None],
    *,
    scale: float | None = None,
    queries: tuple[str, ...] = QUERIES,
    repeats: int = 2,
    files: int = FILES,
    root: Path = CACHE,
) -> None:
    """Each query ``repeats`` times clean, then ``repeats`` times with a worker killed halfway;
    ``emit`` gets one line per query (``benchmark="batch.faults"``): the median walls, their
    ratio, the retries, and whether every killed run's answer equals the clean one; a query
    the local engine does not run yet gets a line saying why."""
    factor = scale if scale is not None else (1.0 if quick else 10.0)
    directory = generate(factor, root, files)
    with tempfile.TemporaryDirectory(prefix="strom-faults-") as tmp:
        for query in queries:
            row: dict[str, Any] = {"benchmark": "batch.faults", "params": {"scale": factor}}
            row["query"] = query
            reason = _unsupported(query, directory)
            if reason is not None:
                emit({**row, "unsupported": reason})
                continue
            clean_out = Path(tmp) / f"{query}-clean.parquet"
            clean = [attempt(query, directory, clean_out, None) for _ in range(repeats)]
            if any("failed" in c for c in clean):
                emit({**row, "failed": next(c["failed"] for c in clean if "failed" in c)})
                continue
            clean_wall = statistics.median(c["wall_s"] for c in clean)
            reference = pl.read_parquet(clean_out)
            killed, correct = [], True
            for i in range(repeats):
                out = Path(tmp) / f"{query}-killed-{i}.parquet"
                result = attempt(query, directory, out, clean_wall / 2)
                if "failed" in result:
                    correct = False
                    continue
                correct = correct and same_answer(pl.read_parquet(out), reference)
                killed.append(result)
            recovered = [k for k in killed if k["killed"] is not None and k["retries"] > 0]
            row |= {
                "clean_wall_s": clean_wall,
                "tasks": clean[0]["tasks"],
                "workers": clean[0]["workers"],
                "killed_runs": len(recovered),
                "missed_kills": len(killed) - len(recovered),
                "correct": correct and len(killed) == repeats,
            }
            if recovered:
                wall = statistics.median(k["wall_s"] for k in recovered)
                row |= {
                    "killed_wall_s": wall,
                    "ratio": wall / clean_wall,
                    "retries": max(k["retries"] for k in recovered),
                }
            emit(row)


def write_markdown(lines: list[dict[str, Any]], path: Path) -> None:
    """The fault table (target: ratio <= 1.5)."""
    taken = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = [
        "# Batch: one worker killed (local engine)",
        "",
        f"Taken {taken} on {os.cpu_count()} cores. Each query on the local engine (one worker per "
        "core), "
        "clean and with one worker SIGKILLed from outside halfway through the clean run's "
        "median wall time; wall seconds after imports, median of the runs; the killed runs' "
        "answers compared with the clean one. Target: killed / clean <= 1.5.",
        "",
        "| query | scale | workers | tasks | clean s | killed s | killed / clean | retries "
        "| correct |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in lines:
        scale = x["params"]["scale"]
        if "failed" in x or "unsupported" in x:
            why = f"failed: {x['failed']}" if "failed" in x else "not run by the local engine"
            out.append(f"| {x['query']} | {scale:g} | | | {why} | | | | |")
            continue
        killed = f"{x['killed_wall_s']:.2f}" if "killed_wall_s" in x else "(kill missed)"
        ratio = f"{x['ratio']:.2f}x" if "ratio" in x else ""
        out.append(
            f"| {x['query']} | {scale:g} | {x['workers']} | {x['tasks']} | "
            f"{x['clean_wall_s']:.2f} | {killed} | "
            f"{ratio} | {x.get('retries', 0)} | {x['correct']} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="scale factor 1 (else 10)")
    parser.add_argument("--scale", type=float, help="another scale factor")
    parser.add_argument("--queries", default=",".join(QUERIES))
    parser.add_argument("--child", nargs=3, metavar=("QUERY", "DIR", "OUT"))
    args = parser.parse_args()
    if args.child:
        query, directory, out = args.child
        child(query, Path(directory), Path(out))
        return
    lines: list[dict[str, Any]] = []

    def emit(line: dict[str, Any]) -> None:
        lines.append(line)
        print(json.dumps(line), flush=True)

    run(args.quick, emit, scale=args.scale, queries=tuple(args.queries.split(",")))
    suffix = "-quick" if args.quick else ""
    write_markdown(lines, Path("benchmarks/results") / f"batch-faults{suffix}.md")


if __name__ == "__main__":
    main()
