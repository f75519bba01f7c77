"""strom on Spark beside hand-written PySpark, on the same Parquet files and session.

The issue's group-by case, smaller: ``--files`` Parquet files of ``--rows`` rows in all, 100 keys,
count / sum / mean per key in one tumbling window spanning every event (the plan API's way to
write a group-by), through ``strom.spark.run_spark`` into memory, and the same query written
directly in PySpark (``groupBy().agg()``, ``toArrow()``). Session start is excluded and reported
apart; each query runs ``--repeat`` times, alternating, and the median wall time is reported
with ``correct``: strom's rows equal PySpark's.

Run: ``python -m benchmarks.spark_backend [--files 200] [--rows 2000000] [--master local[2]]``.
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
    args = parser.parse_args()
    from pyspark.sql import functions as F

    from strom.spark import run_spark, spark_session

    with tempfile.TemporaryDirectory() as tmp:
        glob = _write(Path(tmp), args.files, args.rows)
        started = time.perf_counter()
        spark = spark_session(args.master)
        session_s = time.perf_counter() - started

        def strom() -> pl.DataFrame:
            p, sink = Pipeline(), MemorySink()
            source = FileSource(glob, "parquet", partitions=args.files)
            p.source(source, timestamp="ts").key_by("k").window(Tumbling(10**12)).agg(
                agg.count(), agg.sum("v"), agg.mean("v")
            ).sink(sink)
            run_spark(p, spark)
            return sink.to_frame().select("k", "count", "sum_v", "mean_v").sort("k")

        def pyspark() -> pl.DataFrame:
            df = (
                spark.read.parquet(glob)
                .groupBy("k")
                .agg(
                    F.count(F.lit(1)).alias("count"),
                    F.sum("v").alias("sum_v"),
                    F.avg("v").alias("mean_v"),
                )
            )
            out = pl.from_arrow(df.toArrow())
            assert isinstance(out, pl.DataFrame)
            return out.sort("k")

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
