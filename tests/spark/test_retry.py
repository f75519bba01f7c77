"""Spark's own task retry and the progress display, through ``strom run FILE --engine spark
--master local[2,4]`` (in process, on the shared session): a ``map_batches`` task that raises
and one whose Python worker dies mid-task are tried again by Spark, recomputed from the source
files, and the files written equal the bounded runner's result."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from strom.bounded import run_bounded
from strom.cli.main import cli
from strom.cli.run import load_pipeline

PIPELINE = '''
import os
import re
from pathlib import Path

import polars as pl
from strom import FileSink, FileSource, Pipeline, Tumbling, agg

here = Path(os.environ["RETRY_DIR"])


def fail_once(batch: pl.DataFrame) -> pl.DataFrame:
    """The first attempt to find no marker file creates it and fails: one raises, one kills
    its Python worker process, as an OOM kill would."""
    for marker, kill in (("raised", False), ("killed", True)):
        try:
            (here / marker).open("x").close()
        except FileExistsError:
            continue
        if kill:
            os._exit(3)
        raise RuntimeError("injected task failure")
    return batch.with_columns(half=pl.col("v") / 2)


pipeline = Pipeline()
files = FileSource(str(here / "data/*.ndjson"), "ndjson", partitions=3)
schema = pl.Schema({"ts": pl.Int64(), "k": pl.String(), "v": pl.Int64(), "half": pl.Float64()})
(
    pipeline.source(files, timestamp="ts")
    .map_batches(fail_once, schema=schema)
    .key_by("k")
    .window(Tumbling(10_000))
    .agg(agg.count(), agg.sum("v"), agg.max("half"))
    .sink(FileSink(here / os.environ["RETRY_OUT"], "parquet"))
)
'''


def test_failed_tasks_are_retried_by_spark_with_the_same_result(
    spark: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    (tmp_path / "data").mkdir()
    for i in range(6):
        pl.DataFrame(
            {
                "ts": [j * 700 + i for j in range(50)],
                "k": [f"k{j % 4}" for j in range(50)],
                "v": list(range(50)),
            }
        ).write_ndjson(tmp_path / "data" / f"f{i}.ndjson")
    file = tmp_path / "pipeline.py"
    file.write_text(PIPELINE)
    monkeypatch.setenv("RETRY_DIR", str(tmp_path))
    monkeypatch.setenv("RETRY_OUT", "spark")
    args = ["run", str(file), "--engine", "spark", "--master", "local[2,4]"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "raised").exists() and (tmp_path / "killed").exists()
    assert "failed attempt(s) retried" in result.output
    retried = int(result.output.split(" failed attempt(s) retried")[0].rsplit(" ", 1)[-1])
    assert retried >= 2, result.output
    # not a terminal: the progress display prints one line per finished stage
    assert re.search(r"stage \d+ \(.*\): (\d+)/\1 tasks, \d+ failed", result.output), result.output
    monkeypatch.setenv("RETRY_OUT", "bounded")
    run_bounded(load_pipeline(file))
    got = pl.read_parquet(tmp_path / "spark" / "*.parquet")
    want = pl.read_parquet(tmp_path / "bounded" / "*.parquet")
    order = ["window_start", "k"]
    assert_frame_equal(got.sort(order), want.sort(order))


def test_spark_takes_no_workers_or_checkpoints(tmp_path: Path) -> None:
    file = tmp_path / "pipeline.py"
    file.write_text("raise SystemExit('not loaded')\n")
    for extra in (["--workers", "2"], ["--checkpoint-dir", str(tmp_path / "c")]):
        result = CliRunner().invoke(cli, ["run", str(file), "--engine", "spark", *extra])
        assert result.exit_code == 2
        assert "--engine spark takes neither --workers nor --checkpoint-dir" in result.output
