"""The killed-worker batch benchmark: a worker SIGKILLed from outside leaves the local engine's
answer equal to a clean run's, and the report says what happened (a smoke test on a tiny scale
factor: its timings mean nothing and none is asserted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from benchmarks.tpch import faults
from benchmarks.tpch.data import generate
from benchmarks.tpch.runner import same_answer


def test_a_worker_killed_at_the_start_changes_nothing_in_the_answer(tmp_path: Path) -> None:
    directory = generate(0.01, tmp_path / "data", 7)
    clean = faults.attempt("q6", directory, tmp_path / "clean.parquet", None)
    killed = faults.attempt("q6", directory, tmp_path / "killed.parquet", 0.0)
    assert clean["killed"] is None and clean["retries"] == 0
    assert killed["killed"] is not None  # a worker process was found and killed
    answer = pl.read_parquet(tmp_path / "killed.parquet")
    assert answer.height > 0
    assert same_answer(answer, pl.read_parquet(tmp_path / "clean.parquet"))


def test_the_suite_reports_each_query(tmp_path: Path) -> None:
    lines: list[dict[str, Any]] = []
    queries = ("q6", "q18")
    faults.run(True, lines.append, scale=0.01, queries=queries, repeats=1, files=7, root=tmp_path)
    assert [line["query"] for line in lines] == list(queries)
    for line in lines:  # each query either ran, with the killed run's answer right, or says why
        if "unsupported" in line:
            assert "local engine" in line["unsupported"]
            continue
        assert line["correct"] is True, line
        assert line["killed_runs"] + line["missed_kills"] == 1
    faults.write_markdown(lines, tmp_path / "faults.md")
    text = (tmp_path / "faults.md").read_text(encoding="utf-8")
    assert "| q6 | 0.01 | " in text and "| True |" in text
