"""strom on Spark beside hand-written PySpark, on the same Parquet files and session.

The issue's group-by case, smaller: ``--files`` Parquet files of ``--rows`` rows in all, 100 keys.
``--query``:

- ``window``: count / sum / mean per key in one tumbling window spanning every event;
- ``keyed``: the same as a keyed aggregation (``key_by("k").agg(...)``);
- ``join``: the rows inner-joined to a 100-row Parquet dimension on ``k``, then count and sum of
  ``v * w`` per dimension ``name`` (a join and a group-by, as TPC-H queries are).

Each runs through ``strom.spark.run_spark`` into memory, and as the same query written directly
in PySpark (``join()``, ``groupBy().agg()``, ``toArrow()``). Session start is excluded and
reported apart; each query runs ``--repeat`` times, alternating, and the median wall time is
reported with ``correct``: strom's rows equal PySpark's.

Run: ``python -m benchmarks.spark_backend [--query window|keyed|join] [--files 200]
[--rows 2000000] [--master local[2]]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from strom import FileSource, MemorySink, Pipeline, Tumbling, agg

__all__ = ["main"]


def _dimension(directory: Path) -> str:
    (directory / "dim").mkdir()
    path = directory / "dim" / "dim.parquet"  # apart from the rows' files
    pl.DataFrame(
        {
            "k": range(100),
            "name": [f"n{i % 10}" for i in range(100)],
            "w": [i / 7 for i in range(100)],
        }
    ).write_parquet(path)
    return str(path)


def _write(directory: Path, files: int, rows: int) -> str:
    rng = np.random.default_rng(7)
    per = rows // files
    for i in range(files):
        pl.DataFrame(
            {
                "ts": rng.integers(0, 1_000_000, per),
                "k": rng.integers(0, 100, per),
                "v": rng.normal(size=per),
            }
        ).write_parquet(directory / f"part-{i:05d}.parquet")
    return str(directory / "*.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--query", choices=("window", "keyed", "join"), default="window")
    args = parser.parse_args()
    from pyspark.sql import functions as F

    from strom.spark import run_spark, spark_session

    with tempfile.TemporaryDirectory() as tmp:
        glob = _write(Path(tmp), args.files, args.rows)
        started = time.perf_counter()
        spark = spark_session(args.master)
        session_s = time.perf_counter() - started

        dim = _dimension(Path(tmp))
        group = "name" if args.query == "join" else "k"

        def strom() -> pl.DataFrame:
            p, sink = Pipeline(), MemorySink()
            source = FileSource(glob, "parquet", partitions=args.files)
            rows = p.source(source, timestamp="ts")
            if args.query == "join":
                dimension = p.source(FileSource(dim, "parquet"))
                rows = rows.join(dimension, on="k").with_columns(vw=pl.col("v") * pl.col("w"))
                rows.key_by("name").agg(agg.count(), agg.sum("vw", name="sum_v")).sink(sink)
            elif args.query == "keyed":
                rows.key_by("k").agg(agg.count(), agg.sum("v"), agg.mean("v")).sink(sink)
            else:
                rows.key_by("k").window(Tumbling(10**12)).agg(
                    agg.count(), agg.sum("v"), agg.mean("v")
                ).sink(sink)
            run_spark(p, spark)
            return sink.to_frame().select(group, "count", "sum_v").sort(group)

        def pyspark() -> pl.DataFrame:
            df = spark.read.parquet(glob)
            value = F.col("v")
            if args.query == "join":
                df = df.join(spark.read.parquet(dim), "k")
                value = F.col("v") * F.col("w")
            df = df.groupBy(group).agg(
                F.count(F.lit(1)).alias("count"),
                F.sum(value).alias("sum_v"),
                *([] if args.query == "join" else [F.avg("v").alias("mean_v")]),
            )
            out = pl.from_arrow(df.toArrow())
            assert isinstance(out, pl.DataFrame)
            return out.select(group, "count", "sum_v").sort(group)

        times: dict[str, list[float]] = {"strom": [], "pyspark": []}
        results: dict[str, pl.DataFrame] = {}
        for _ in range(args.repeat):
            for name, fn in (("strom", strom), ("pyspark", pyspark)):
                t = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - t)
        a, b = results["strom"], results["pyspark"]
        correct = a["count"].equals(b["count"]) and bool(
            np.allclose(a["sum_v"].to_numpy(), b["sum_v"].to_numpy(), rtol=1e-9)
        )
        strom_s, pyspark_s = (statistics.median(times[n]) for n in ("strom", "pyspark"))
        print(
            json.dumps(
                {
                    "query": args.query,
                    "files": args.files,
                    "rows": args.rows,
                    "master": args.master,
                    "session_start_s": round(session_s, 2),
                    "strom_on_spark_s": round(strom_s, 2),
                    "pyspark_s": round(pyspark_s, 2),
                    "ratio": round(strom_s / pyspark_s, 2),
                    "runs": {n: [round(x, 2) for x in v] for n, v in times.items()},
                    "correct": correct,
                }
            )
        )
        spark.stop()


if __name__ == "__main__":
    main()
