"""Progress reporters render every event: a rich bar, plain lines, JSON lines."""

from __future__ import annotations

import io
import json

from rich.console import Console

from strom.batch import JsonProgress, PlainProgress, Progress, RichProgress


def drive(progress: Progress) -> None:
    progress.stage_started("job 0 map", 2, 2_000_000)
    progress.task_done("job 0 map", 10, 1_000_000)
    progress.retried("job 0 map", "j0-map-00001", "its worker process died (signal SIGKILL)")
    progress.skipped("job 0 map", "/data/bad.parquet", "ComputeError: no footer")
    progress.task_done("job 0 map", 5, 1_000_000)
    progress.stage_done("job 0 map")
    progress.close()


def test_json_lines_carry_the_stage_statistics() -> None:
    out = io.StringIO()
    drive(JsonProgress(out))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["started", "task", "retry", "skipped", "task", "done"]
    last = records[-1]
    assert (last["done"], last["tasks"], last["rows"], last["retries"], last["skipped"]) == (
        2,
        2,
        15,
        1,
        1,
    )
    assert records[3]["file"] == "/data/bad.parquet"


def test_plain_lines_and_the_rich_bar() -> None:
    out = io.StringIO()
    drive(PlainProgress(out, interval_s=3600))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[started] job 0 map: 0/2 tasks")
    assert any("retry" in line and "SIGKILL" in line for line in lines)
    assert lines[-1].startswith("[done] job 0 map: 2/2 tasks, 15 rows")
    screen = io.StringIO()
    drive(RichProgress(Console(file=screen, force_terminal=True, width=160)))
    text = screen.getvalue()
    assert "job 0 map" in text and "retries 1 skipped 1" in text and "bad.parquet" in text
