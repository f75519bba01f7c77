"""The Nexmark suite end to end at toy scale (these numbers mean nothing): every strom query
is correct, and a wrong output is reported as one."""

from __future__ import annotations

from typing import Any

from benchmarks.nexmark import runner
from benchmarks.nexmark.queries import QUERIES

REQUIRED = {
    "benchmark",
    "system",
    "params",
    "events",
    "wall_s",
    "cpu_s",
    "events_per_s",
    "events_per_core_s",
    "p50_ms",
    "p99_ms",
    "correct",
}


def _strom(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        x["params"]["query"]: x
        for x in lines
        if x["system"].startswith("strom") and "query" in x.get("params", {})
    }


def test_every_query_is_correct_at_toy_scale() -> None:
    lines: list[dict[str, Any]] = []
    runner.run(quick=True, emit=lines.append, scale=0.01, peers=False)  # 5,000 events
    strom = _strom(lines)
    assert set(strom) == set(QUERIES)
    for query, line in strom.items():
        assert "failed" not in line, line
        if "na" in line:  # only a query the engine cannot express yet
            assert line["na"]
            continue
        assert line.keys() >= REQUIRED, query
        assert line["correct"] is True, line
        assert line["events"] > 0
        assert line["params"]["query"] == query
        assert line["system"].startswith("strom ")
        runs = runner.QUICK.runs
        assert line["runs"] == runs and len(line["cpu_s_runs"]) == runs
        assert sorted(line["cpu_s_runs"])[runs // 2] == line["cpu_s"]  # the median is reported
    load = next(x for x in lines if x["benchmark"] == "nexmark.load")
    assert load["events_loaded"] == 5_000


def test_a_wrong_output_is_reported_incorrect() -> None:
    lines: list[dict[str, Any]] = []
    params = runner.SuiteParams(events=5_000, partitions=2)
    lose_a_row = lambda query, output: output.head(output.height - 1)  # noqa: E731
    runner.run_suite(params, lines.append, ("q2",), corrupt=lose_a_row, with_peers=False)
    line = _strom(lines)["q2"]
    assert line["correct"] is False
    assert "rows, expected" in line["mismatch"]
