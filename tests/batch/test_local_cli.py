"""``strom run --engine local``: progress for machines, and exit codes that name the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl

PIPELINE = """
from strom import FileSink, Pipeline, {window}, agg
from strom.connectors import FileSource

pipeline = Pipeline()
events = pipeline.source(FileSource({glob!r}, "parquet"), timestamp="ts")
events.key_by("k").window({window}(10_000)).agg(agg.count(), agg.sum("v")).sink(
    FileSink({out!r}, "parquet")
)
"""


def strom_run(
    tmp_path: Path,
    directory: Path,
    *args: str,
    window: str = "Tumbling",
    engine: tuple[str, ...] = ("--engine", "local", "--workers", "2"),
):
    pipeline = tmp_path / "pipeline.py"
    out = tmp_path / "out"
    glob = str(directory / "*.parquet")
    pipeline.write_text(PIPELINE.format(glob=glob, out=str(out), window=window))
    command = [sys.executable, "-m", "strom", "run", str(pipeline), *engine, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    return done, out


def test_json_progress_and_the_result(events, tmp_path: Path) -> None:
    directory = events(files=6)
    done, out = strom_run(tmp_path, directory, "--progress", "json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    stages = {r["stage"] for r in records}
    assert stages == {"job 0 map", "job 0 reduce"}
    last_map = [r for r in records if r["stage"] == "job 0 map" and r["event"] == "done"][-1]
    assert last_map["done"] == last_map["tasks"] >= 1
    assert last_map["rows"] == 6 * 3_000 and last_map["skipped"] == 0
    assert "peak memory (anonymous) of the process tree" in done.stderr
    expected = pl.read_parquet(directory / "*.parquet").height
    assert pl.read_parquet(out / "part-*.parquet").get_column("count").sum() == expected


def test_a_bad_file_exits_non_zero_naming_it(events, tmp_path: Path) -> None:
    directory = events(files=4)
    bad = directory / "part-00002.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    done, out = strom_run(tmp_path, directory, "--progress", "plain")
    assert done.returncode == 1
    assert f"bad input file {bad}" in done.stderr
    assert not (out / "_SUCCESS").exists()
    done, out = strom_run(tmp_path, directory, "--on-bad-file", "skip", "--progress", "plain")
    assert done.returncode == 0, done.stderr
    assert f"skipped bad file {bad}" in done.stderr and "bad-file report:" in done.stderr
    assert (out / "_SUCCESS").exists()


def test_an_unsupported_plan_says_so(events, tmp_path: Path) -> None:
    done, _ = strom_run(tmp_path, events(files=1), window="Session")
    assert done.returncode == 1
    assert "invalid pipeline for --engine local" in done.stderr
    assert "session windows" in done.stderr


def test_the_default_engine_is_local_for_what_it_runs_and_streaming_otherwise(
    events, tmp_path: Path
) -> None:
    directory = events(files=3)
    expected = pl.read_parquet(directory / "*.parquet").height
    done, out = strom_run(tmp_path, directory, "--progress", "none", engine=())
    assert done.returncode == 0, done.stderr
    assert "engine: local (a bounded pipeline over files)" in done.stderr
    assert pl.read_parquet(out / "part-*.parquet").get_column("count").sum() == expected
    # a plan the batch engine does not run goes to the streaming executor, saying why
    (tmp_path / "session").mkdir()
    done, out = strom_run(tmp_path / "session", directory, window="Session", engine=())
    assert done.returncode == 0, done.stderr
    assert "engine: stream (not for the batch engine:" in done.stderr
    assert "session windows" in done.stderr
    # (streaming drops the files' out-of-order events as late: fewer, never more)
    assert 0 < pl.read_parquet(out / "*.parquet").get_column("count").sum() <= expected
    # so does a run that asks for streaming
    (tmp_path / "streamed").mkdir()
    done, out = strom_run(tmp_path / "streamed", directory, "--max-seconds", "60", engine=())
    assert done.returncode == 0, done.stderr
    assert "engine: stream (--max-seconds given)" in done.stderr
    assert 0 < pl.read_parquet(out / "*.parquet").get_column("count").sum() <= expected


RELATIONAL = """
from strom import FileSink, Pipeline, agg
from strom.connectors import FileSource

pipeline = Pipeline()
events = pipeline.source(FileSource({glob!r}, "parquet"), timestamp="ts")
events.key_by("k").agg(agg.count(), agg.last("v")).sink(FileSink({out!r} + "/totals", "parquet"))
names = pipeline.source(FileSource({names!r}, "parquet"), name="names")
events.join(names, on="k", how="left").sink(FileSink({out!r} + "/joined", "parquet"))
"""


def test_a_keyed_agg_and_a_join_from_the_command_line(events, tmp_path: Path) -> None:
    directory = events(files=5)
    pipeline, out = tmp_path / "pipeline.py", tmp_path / "out"
    names = tmp_path / "names.parquet"
    pl.DataFrame({"k": range(30), "name": [f"n{k}" for k in range(30)]}).write_parquet(names)
    glob = str(directory / "*.parquet")
    pipeline.write_text(RELATIONAL.format(glob=glob, names=str(names), out=str(out)))
    command = [sys.executable, "-m", "strom", "run", str(pipeline), "--engine", "local"]
    done = subprocess.run(
        [*command, "--workers", "2", "--progress", "plain"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "totals" / "_SUCCESS").exists() and (out / "joined" / "_SUCCESS").exists()
    totals = pl.read_parquet(out / "totals" / "part-*.parquet")
    assert totals.height == 40 and totals.get_column("count").sum() == 5 * 3_000
    joined = pl.read_parquet(out / "joined" / "part-*.parquet")
    assert joined.height == 5 * 3_000  # a left join: every event once, keys 30-39 unnamed
    assert joined.filter(pl.col("name").is_null()).get_column("k").min() == 30
