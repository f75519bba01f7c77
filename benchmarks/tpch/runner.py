"""``strom bench batch``: TPC-H Q1, Q3, Q5, Q6, Q12 and Q18 over ``tpchgen-cli``'s data, strom
beside hand-written Polars, DuckDB and PySpark, in one run on the same files.

Quick: scale factor 1 (6 M lineitem rows), full: scale factor 10; ``lineitem`` and ``orders``
as 2,000 Parquet files each. Systems, each query in its own process:

- ``strom local``: the local engine (:func:`strom.batch.run_local`, worker processes, shuffles on
  disk, one stage per join, aggregation and sort); it runs every query (a PlanError would be
  reported as such, with the engine's reason);
- ``strom bounded``: the single-process bounded runner (:func:`strom.run_bounded`);
- ``strom spark``: the same pipeline on PySpark ``local[2]`` (:func:`strom.spark.run_spark`);
- ``polars``: hand-written lazy Polars on its streaming engine;
- ``duckdb``: the SQL of :mod:`.sql`, ``threads`` = cores: the reference answers;
- ``pyspark``: the same SQL through Spark SQL on ``local[2]``.

Measured per query: wall time after imports (for the Spark systems after the session started:
that start is reported apart), CPU seconds and peak anonymous memory of the child's whole process
tree (sampled every 10 ms), rows/s of input (lineitem rows over wall time). ``correct``: the
answer equals DuckDB's (decimals exact, averages to 1e-9 relative).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.systems import process_cpu_s
from benchmarks.tpch.data import CACHE, FILES, LARGE, SMALL, generate, table_glob
from benchmarks.tpch.queries import POLARS, QUERIES, strom_pipeline
from benchmarks.tpch.sql import SQL

__all__ = ["SYSTEMS", "main", "measure", "run", "same_answer"]

SYSTEMS = ("strom local", "strom bounded", "strom spark", "polars", "duckdb", "pyspark")
MASTER = "local[2]"


def child(system: str, query: str, directory: Path, out: Path) -> None:
    """Run ``query`` on ``system`` in this process; write its answer to ``out`` (Parquet) and
    print one JSON line: wall seconds (and the Spark session's start)."""
    import duckdb

    from strom import MemorySink, PlanError, run_bounded

    glob = {t: table_glob(directory, t) for t in (*LARGE, *SMALL)}
    extra: dict[str, Any] = {}
    spark = None
    if system in ("strom spark", "pyspark"):
        started = time.perf_counter()
        from strom.spark import spark_session

        spark = spark_session(MASTER, "strom-bench-tpch")
        extra["session_s"] = time.perf_counter() - started
    start = time.perf_counter()
    if system.startswith("strom"):
        pipeline, stream = strom_pipeline(query, glob.__getitem__)
        sink = MemorySink()
        stream.sink(sink)
        try:
            if system == "strom local":
                from strom.batch import run_local

                run_local(pipeline, work_dir=out.parent / "work")
            elif system == "strom spark":
                from strom.spark import run_spark

                run_spark(pipeline, spark)
            else:
                run_bounded(pipeline)
        except PlanError as exc:
            print(json.dumps({"unsupported": str(exc)}))
            return
        result = sink.to_frame()
    elif system == "polars":
        result = POLARS[query](lambda t: pl.scan_parquet(glob[t])).collect(engine="streaming")
    elif system == "duckdb":
        con = duckdb.connect(config={"threads": os.cpu_count() or 1})
        for table, pattern in glob.items():
            con.sql(f"create view {table} as select * from read_parquet('{pattern}')")
        result = pl.DataFrame(con.sql(SQL[query]).arrow())
    else:
        assert spark is not None
        for table, pattern in glob.items():
            spark.read.parquet(pattern).createOrReplaceTempView(table)
        result = pl.DataFrame(spark.sql(SQL[query]).toArrow())
    wall = time.perf_counter() - start
    result.write_parquet(out)
    print(json.dumps({"wall_s": wall, **extra}))
    if spark is not None:
        spark.stop()


def _cpu(pid: int) -> float:
    try:
        return process_cpu_s(pid)
    except OSError:  # it ended between the listing and the read
        return 0.0


def measure(system: str, query: str, directory: Path, scratch: Path) -> dict[str, Any]:
    """One child run of ``query`` on ``system``: its JSON line plus peak memory and CPU of its
    process tree, and its answer's path."""
    from strom.batch.memory import tree, tree_resident

    out = scratch / f"{system.replace(' ', '-')}-{query}.parquet"
    command = [sys.executable, "-m", "benchmarks.tpch.runner", "--child", system, query]
    command += [str(directory), str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0
    cpu: dict[int, float] = {}  # the last CPU seconds seen per process of the tree
    while process.poll() is None:
        peak = max(peak, tree_resident(process.pid))
        for pid in tree(process.pid):
            cpu[pid] = max(cpu.get(pid, 0.0), _cpu(pid))
        time.sleep(0.01)
    stdout, _ = process.communicate()
    row: dict[str, Any] = {"system": system, "query": query}
    if process.returncode != 0:
        return {**row, "failed": f"exit {process.returncode}"}
    record: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    if "unsupported" in record:
        return {**row, **record}
    return {
        **row,
        **record,
        "cpu_s": sum(cpu.values()),
        "peak_mib": peak / 2**20,
        "answer": str(out),
    }


def same_answer(got: pl.DataFrame, reference: pl.DataFrame) -> bool:
    """``got`` holds ``reference``'s rows in its order: strings and integers equal, decimals
    exactly, a float against a float to 1e-9 relative, a float against a decimal of scale ``s``
    to half a unit in its last place (Spark averages decimals into a decimal of scale 6, DuckDB
    into a double). Extra columns of ``got`` (strom's ``is_update``) are ignored."""
    if got.height != reference.height or not set(reference.columns) <= set(got.columns):
        return False
    for name in reference.columns:
        a, b = got[name], reference[name]
        if not (a.dtype.is_numeric() and b.dtype.is_numeric()):
            if not a.cast(b.dtype).equals(b):
                return False
            continue
        scales = [d.scale for d in (a.dtype, b.dtype) if isinstance(d, pl.Decimal)]
        if len(scales) == 2:
            exact = pl.Decimal(38, max(scales))
            if not a.cast(exact).equals(b.cast(exact)):
                return False
            continue
        x, y = a.cast(pl.Float64), b.cast(pl.Float64)
        if x.null_count() != y.null_count():
            return False
        if not scales:
            tolerance = 1e-9 * y.abs().clip(lower_bound=1.0)
        else:
            tolerance = pl.Series([0.5 * 10 ** -scales[0] + 1e-9 * v for v in y.abs()])
        if not ((x - y).abs() <= tolerance).all():
            return False
    return True


def run(
    quick: bool,
    emit: Callable[[dict[str, Any]], None],
    *,
    scale: float | None = None,
    queries: tuple[str, ...] = QUERIES,
    systems: tuple[str, ...] = SYSTEMS,
    files: int = FILES,
    root: Path = CACHE,
) -> None:
    """Every query on every system (DuckDB first: the reference), one child process each;
    ``emit`` gets one line per run (``benchmark="batch.tpch"``). Scale factor 1 if ``quick``,
    else 10 (or ``scale``); the data is made once under ``root``, large tables as ``files``
    files each."""
    factor = scale if scale is not None else (1.0 if quick else 10.0)
    directory = generate(factor, root, files)
    lineitem = pl.scan_parquet(table_glob(directory, "lineitem")).select(pl.len()).collect()
    input_rows = int(lineitem.item())
    ordered = ("duckdb", *(s for s in systems if s != "duckdb"))
    with tempfile.TemporaryDirectory(prefix="strom-tpch-") as tmp:
        for query in queries:
            reference: pl.DataFrame | None = None
            for system in ordered:
                row = measure(system, query, directory, Path(tmp))
                if "answer" in row:
                    answer = pl.read_parquet(row.pop("answer"))
                    if system == "duckdb":
                        reference = answer
                    row["correct"] = reference is not None and same_answer(answer, reference)
                    row["rows_per_s"] = input_rows / row["wall_s"]
                emit({"benchmark": "batch.tpch", "params": {"scale": factor}, **row})


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="scale factor 1 (else 10)")
    parser.add_argument("--scale", type=float, help="another scale factor")
    parser.add_argument("--queries", default=",".join(QUERIES))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--child", nargs=4, metavar=("SYSTEM", "QUERY", "DIR", "OUT"))
    args = parser.parse_args()
    if args.child:
        system, query, directory, out = args.child
        child(system, query, Path(directory), Path(out))
        return
    from benchmarks.tpch.report import write

    lines: list[dict[str, Any]] = []

    def emit(line: dict[str, Any]) -> None:
        lines.append(line)
        print(json.dumps(line), flush=True)

    run(
        args.quick,
        emit,
        scale=args.scale,
        queries=tuple(args.queries.split(",")),
        systems=tuple(args.systems.split(",")),
    )
    print(f"wrote {', '.join(str(p) for p in write(lines, quick=args.quick))}")


if __name__ == "__main__":
    main()
