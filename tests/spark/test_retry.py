"""Spark's own task retry, through ``strom run --engine spark --master local[2,4]``: a task
that raises and a Python worker that dies mid-task are retried by Spark (recomputed from the
source files), and the files written equal the bounded runner's result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import java_missing
from strom.bounded import run_bounded
from strom.cli.run import load_pipeline

PIPELINE = """
import os
import re
import polars as pl
from strom import FileSink, FileSource, Pipeline, Tumbling, agg

data = os.environ["RETRY_DATA"]
pipeline = Pipeline()
events = pipeline.source(FileSource(data + "/*.ndjson", "ndjson", partitions=3), timestamp="ts")
(
    events.with_columns(half=pl.col("v") / 2)  # Polars inside mapInArrow: where failures land
    .key_by("k")
    .window(Tumbling(10_000))
    .agg(agg.count(), agg.sum("v"), agg.first("v"), agg.last("half"))
    .sink(FileSink(os.environ["RETRY_OUT"], "parquet"))
)
"""


def test_failed_tasks_are_retried_by_spark_with_the_same_result(tmp_path: Path) -> None:
    reason = java_missing()
    if reason is not None:
        pytest.skip(reason)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        pl.DataFrame(
            {
                "ts": [j * 700 + i for j in range(50)],
                "k": [f"k{j % 4}" for j in range(50)],
                "v": list(range(50)),
            }
        ).write_ndjson(data / f"f{i}.ndjson")
    file = tmp_path / "pipeline.py"
    file.write_text(PIPELINE)
    env = {
        **os.environ,
        "RETRY_DATA": str(data),
        "RETRY_OUT": str(tmp_path / "spark"),
        "STROM_SPARK_FAIL_ONCE": str(tmp_path / "failed"),
        "STROM_SPARK_KILL_ONCE": str(tmp_path / "killed"),
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "strom",
            "run",
            str(file),
            "--engine",
            "spark",
            "--master",
            "local[2,4]",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "failed").exists() and (tmp_path / "killed").exists()
    assert "injected task failure" in run.stderr  # Spark logged the first attempt's error
    retried = re.search(r"(\d+) failed attempt\(s\) retried", run.stderr)
    assert retried is not None and int(retried.group(1)) >= 2, run.stderr[-3000:]
    os.environ["RETRY_DATA"], os.environ["RETRY_OUT"] = str(data), str(tmp_path / "bounded")
    try:
        run_bounded(load_pipeline(file))
    finally:
        del os.environ["RETRY_DATA"], os.environ["RETRY_OUT"]
    got = pl.read_parquet(tmp_path / "spark" / "*.parquet")
    want = pl.read_parquet(tmp_path / "bounded" / "*.parquet")
    order = ["window_start", "k"]
    assert_frame_equal(got.sort(order), want.sort(order))
