"""``strom checkpoints list|show`` and ``strom run``'s checkpoint options (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import row, table_rows
from click.testing import CliRunner, Result

from strom.cli.main import cli
from strom.cli.run import parse_duration_ms

PIPELINE = """
from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg

rows = [{"ts": t, "k": "k%d" % (t % 3), "v": t} for t in range(0, 20_000, 500)]
p = Pipeline()
events = p.source(MemorySource([rows[i::2] for i in range(2)]), timestamp="ts")
events.key_by("k").window(Tumbling(5_000)).agg(agg.count()).sink(MemorySink())
pipeline = p
"""


def _strom(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "windows.py"
    path.write_text(PIPELINE)
    return path


def _run_with_checkpoints(pipeline_file: Path, chk: Path) -> Result:
    return _strom("run", str(pipeline_file), "--checkpoint-dir", str(chk),
                  "--checkpoint-interval", "0", "--guarantee", "at-least-once",
                  "--keep-checkpoints", "2")  # fmt: skip


def test_exactly_once_refuses_at_least_once_sinks_by_name(
    pipeline_file: Path, tmp_path: Path
) -> None:
    result = _strom("run", str(pipeline_file), "--checkpoint-dir", str(tmp_path / "chk"))
    assert result.exit_code == 1
    assert "exactly-once needs two-phase sinks, and these are at-least-once: 0:MemorySink" in (
        result.output
    )
    assert "--guarantee at-least-once" in result.output
    assert not list((tmp_path / "chk").glob("chk-*"))  # refused before anything ran


def test_at_least_once_checkpoints_are_listed_and_shown(
    pipeline_file: Path, tmp_path: Path
) -> None:
    chk = tmp_path / "chk"
    result = _run_with_checkpoints(pipeline_file, chk)
    assert result.exit_code == 0, result.output
    assert "none to resume from, starting afresh" in result.output
    (metrics,) = [
        line for line in result.output.splitlines() if "checkpoints at-least-once" in line
    ]
    assert (
        "count=21 last_id=21" in metrics
    )  # one after each of 20 rounds (a row a poll), and the final one
    listed = json.loads(_strom("checkpoints", "list", str(chk), "--json").output)
    assert [m["id"] for m in listed] == [20, 21]
    final = listed[-1]
    assert final["positions"] == {"source0": [{"batch": 20}, {"batch": 20}]}
    assert [s["operator"] for s in final["states"]] == ["2:WindowAgg"]
    assert final["guarantee"] == "at-least-once" and final["committed"] is True
    table = _strom("checkpoints", "list", str(chk)).output
    cells = [r for r in table_rows(table) if r[0] in ("20", "21")]
    assert [c[0] for c in cells] == ["20", "21"] and "at-least-once" in cells[0]
    assert 'source0: {"batch":20} {"batch":20}' in cells[1][-1]
    shown = _strom("checkpoints", "show", str(chk)).output
    assert shown.startswith("Checkpoint 21 ")
    assert row(shown, "2:WindowAgg")[1] == "state-000.bin"
    positions = [r for r in table_rows(shown) if r[0] == "source0"]
    assert positions == [["source0", "0", '{"batch": 20}'], ["source0", "1", '{"batch": 20}']]
    assert json.loads(_strom("checkpoints", "show", str(chk), "20", "--json").output)["id"] == 20
    missing = _strom("checkpoints", "show", str(chk), "5")
    assert missing.exit_code == 1 and "has no checkpoint 5 (it has [20, 21])" in missing.output
    again = _run_with_checkpoints(pipeline_file, chk)
    assert again.exit_code == 0 and "resuming from checkpoint 21" in again.output


def test_an_empty_directory_lists_nothing(tmp_path: Path) -> None:
    assert "no checkpoints in" in _strom("checkpoints", "list", str(tmp_path)).output
    assert json.loads(_strom("checkpoints", "list", str(tmp_path), "--json").output) == []
    result = _strom("checkpoints", "show", str(tmp_path))
    assert result.exit_code == 1 and "no checkpoints in" in result.output


def test_a_single_process_directory_refuses_workers(pipeline_file: Path, tmp_path: Path) -> None:
    chk = tmp_path / "chk"
    assert _run_with_checkpoints(pipeline_file, chk).exit_code == 0
    result = _strom("run", str(pipeline_file), "--workers", "2", "--checkpoint-dir", str(chk))
    assert result.exit_code == 1
    assert "holds the checkpoints of a single-process run" in result.output
    assert not (chk / "run.json").exists()


def test_durations() -> None:
    assert [parse_duration_ms(t, "x") for t in ("500ms", "1s", "1.5s", "2m", "1h", "250", "0")] == [
        500, 1_000, 1_500, 120_000, 3_600_000, 250, 0
    ]  # fmt: skip
    for bad in ("1 sec", "-1s", "s", ""):
        with pytest.raises(Exception, match="is not a duration"):
            parse_duration_ms(bad, "--checkpoint-interval")


UNBOUNDED = """
import polars as pl
from strom import GeneratorSource, MemorySink, Pipeline, Tumbling, agg

def generate(partition, index):
    return pl.DataFrame({"ts": [index * 100], "k": ["k%d" % (index % 3)]})

p = Pipeline()
events = p.source(GeneratorSource(generate, partitions=2), timestamp="ts")  # never ends
events.key_by("k").window(Tumbling(1_000)).agg(agg.count()).sink(MemorySink())
pipeline = p
"""


def test_a_stopped_run_takes_a_final_checkpoint_and_resumes_from_it(tmp_path: Path) -> None:
    path, chk = tmp_path / "unbounded.py", tmp_path / "chk"
    path.write_text(UNBOUNDED)
    args = ["run", str(path), "--checkpoint-dir", str(chk), "--guarantee", "at-least-once",
            "--checkpoint-interval", "1h", "--max-seconds", "0.5"]  # fmt: skip
    first = _strom(*args)
    assert first.exit_code == 0 and "stopped: --max-seconds 0.5 reached" in first.output
    (only,) = json.loads(_strom("checkpoints", "list", str(chk), "--json").output)
    assert only["id"] == 1  # the interval never elapsed: this is the final checkpoint of the stop
    polled = only["positions"]["source0"][0]["batch"]
    assert polled > 0
    second = _strom(*args)
    assert second.exit_code == 0 and "resuming from checkpoint 1" in second.output
    latest = json.loads(_strom("checkpoints", "show", str(chk), "--json").output)
    assert latest["id"] == 2 and latest["positions"]["source0"][0]["batch"] > polled
