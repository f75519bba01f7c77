"""The exactly-once benchmark: its summary arithmetic exactly, and each part once in a tiny
configuration (a smoke test: these numbers mean nothing, and no timing is asserted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.eos import latency, report, runner, throughput
from benchmarks.latency.runner import SuiteParams

from benchmarks import checkpoint_cost


def _run_line(
    query: str, mode: str, interval: int | None, round_: int, rate: int
) -> dict[str, Any]:
    return {
        "benchmark": "eos.run",
        "round": round_,
        "params": {"query": query, "mode": mode, "interval_ms": interval},
        "events_per_core_s": rate,
        "events_per_s": rate // 2,
        "checkpoints": 3,
        "pause_ms_max": 1.0,
        "correct": True,
    }


def test_the_ratio_is_the_median_of_each_rounds_adjacent_pair() -> None:
    params = throughput.ThroughputParams(events=1, rounds=3, intervals_ms=(1_000,))
    runs = [_run_line("q0", "none", None, r, 100) for r in range(3)]
    # ALO drifts from 100 to 300 over the rounds; EOS is 90 %, 50 %, 95 % of its round's ALO
    for r, (alo, eos) in enumerate([(100, 90), (200, 100), (300, 285)]):
        runs += [_run_line("q0", "alo", 1_000, r, alo), _run_line("q0", "eos", 1_000, r, eos)]
    [summary] = throughput.summarize("q0", runs, params)
    assert summary["eos_over_alo_per_core_rounds"] == [0.9, 0.5, 0.95]
    assert summary["eos_over_alo_per_core"] == 0.9  # not 475 / 600 of the pooled medians
    assert summary["alo_events_per_core_s"] == 200.0
    assert summary["meets_target"] is True and summary["correct"] is True
    runs[-1] = runs[-1] | {"correct": False}
    assert throughput.summarize("q0", runs, params)[0]["correct"] is False


def test_every_part_runs_in_a_tiny_configuration(tmp_path: Path) -> None:
    params = runner.EosParams(
        throughput.ThroughputParams(
            events=20_000, rounds=1, queries=("q5",), intervals_ms=(100,), warm_up=False
        ),
        latency.LatencyParams(
            SuiteParams(rates=(100,), seconds=1.0, idle_s=0.2),
            modes=(latency.LatencyMode("exactly-once", 100),),
        ),
        (0.1,),
    )
    lines: list[dict[str, Any]] = []
    runner.run_suite(params, lines.append)
    assert not [x for x in lines if "failed" in x], lines
    runs = [x for x in lines if x["benchmark"] == "eos.run"]
    assert [x["params"]["mode"] for x in runs] == ["none", "alo", "eos"]
    assert all(x["correct"] for x in runs) and runs[0]["checkpoints"] == 0
    assert runs[1]["checkpoints"] >= 1 and runs[2]["checkpoints"] >= 1
    [summary] = [x for x in lines if x["benchmark"] == "eos.throughput"]
    assert summary["eos_over_alo_per_core"] is not None and summary["correct"] is True
    [late] = [x for x in lines if x["benchmark"] == "eos.latency"]
    assert late["params"]["guarantee"] == "exactly-once"
    assert late["received"] == late["expected"] and late["duplicates"] == 0
    [cost] = [x for x in lines if x["benchmark"] == "eos.checkpoint"]
    assert cost["params"]["keys"] == checkpoint_cost.keys_for(0.1)
    assert cost["state_mb"] > 0 and cost["recovery_ms"] > 0
    json_path = report.write(lines, tmp_path / "eos.md", "Exactly-once benchmark")
    text = (tmp_path / "eos.md").read_text()
    for heading in ("## Throughput", "## End-to-end latency", "## Checkpoint cost"):
        assert heading in text
    assert json_path.name == "eos.json" and json_path.stat().st_size > 0
