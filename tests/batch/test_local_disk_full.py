"""A full disk under the local engine: its shuffle files or its output cannot be written. The run
fails with an error naming the task and ENOSPC (after its retries, which cannot help), no job is
committed, and the input is untouched; never a hang or a half-written result that looks done."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from local_engine_data import write_events

from strom import FileSink, MemorySink, Pipeline, Tumbling, agg
from strom.batch import TaskFailed, run_local
from strom.connectors import FileSource

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def windows(glob: str, sink: MemorySink | FileSink) -> Pipeline:
    p = Pipeline()
    p.source(FileSource(glob, "parquet", partitions=2), timestamp="ts").key_by("k").window(
        Tumbling(1_000)
    ).agg(agg.count(), agg.sum("v"), agg.last("cat")).sink(sink)
    return p


def test_a_full_shuffle_disk_fails_the_run_naming_the_cause(
    tmp_path: Path, tiny_tmpfs: Callable[[str], Path]
) -> None:
    events = write_events(tmp_path / "events", files=6, rows=20_000, keys=5_000)
    before = sorted((p.name, p.stat().st_size) for p in events.iterdir())
    work = tiny_tmpfs("64k")  # far less than one map task's shuffle files
    with pytest.raises(TaskFailed, match=r"No space left on device") as failed:
        run_local(
            windows(str(events / "*.parquet"), MemorySink()),
            workers=2,
            memory="2GiB",
            max_task_attempts=2,
            work_dir=work,
        )
    assert "-map-" in str(failed.value) and "part-0000" in str(failed.value)  # task and files
    assert sorted((p.name, p.stat().st_size) for p in events.iterdir()) == before


def test_a_full_output_disk_commits_nothing(
    tmp_path: Path, tiny_tmpfs: Callable[[str], Path]
) -> None:
    events = write_events(tmp_path / "events", files=6, rows=20_000, keys=5_000)
    out = tiny_tmpfs("64k") / "windows"
    with pytest.raises(TaskFailed, match=r"No space left on device"):
        run_local(
            windows(str(events / "*.parquet"), FileSink(out, "parquet")),
            workers=2,
            memory="2GiB",
            max_task_attempts=2,
            work_dir=tmp_path / "work",
        )
    assert not (out / "_SUCCESS").exists()
    assert not list(out.glob("part-*.parquet"))  # no file that looks like a committed result
