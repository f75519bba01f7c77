"""The latency benchmark: its pure parts exactly, and the suite once at a tiny rate for strom
alone (a smoke test: these numbers mean nothing, and no timing is asserted)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmarks.latency import report, runner
from benchmarks.latency.stats import Phase, kept, percentile, summarize


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 50) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0  # at least half do not exceed it
    assert percentile([1.0, 2.0], 51) == 2.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 0)


@pytest.mark.parametrize("first", [0, 1, 7, 10, 123])
@pytest.mark.parametrize(("rate", "seconds"), [(200, 5.0), (3, 1.0), (1_000, 0.5)])
def test_phase_expects_the_events_the_filter_keeps(first: int, rate: int, seconds: float) -> None:
    phase = Phase(rate, seconds, first)
    seqs = range(phase.first_seq, phase.end_seq)
    assert phase.events == len(seqs) == int(rate * seconds)
    assert phase.expected == sum(1 for s in seqs if kept(s))


def test_summarize_counts_first_arrivals_of_its_own_phase() -> None:
    phase = Phase(10, 1.0, 100)  # seqs 100..109; the filter drops 100
    seqs = np.array([5, 101, 102, 102, 103, 250, 104, 105, 106, 107, 108], dtype=np.int64)
    lat_us = np.array([1, 4_000, 2_000, 9_000, 1_000, 1, 3_000, 5_000, 6_000, 7_000, 8_000])
    result = summarize(phase, seqs, lat_us.astype(np.int64))
    assert (result.received, result.duplicates, result.lost) == (8, 1, 1)  # 109 never came
    # distinct first arrivals: 1, 2, 3, 4, 5, 6, 7, 8 ms (102's second arrival is ignored)
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (4.0, 8.0, 8.0)
    empty = summarize(Phase(10, 1.0, 1_000), seqs, lat_us.astype(np.int64))
    assert (empty.received, empty.lost, empty.p50_ms) == (0, 9, None)
    with pytest.raises(ValueError, match="one entry per"):
        summarize(phase, seqs, lat_us[:3].astype(np.int64))


def _line(system: str, rate: int, p50: float) -> dict[str, Any]:
    return {
        "benchmark": "latency",
        "system": system,
        "params": {"rate": rate, "seconds": 5.0, "partitions": 3},
        "expected": 900,
        "received": 900,
        "duplicates": 2,
        "lost": 0,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "max_ms": None,
        "engine_cpu_s": 0.5,
    }


def test_report_has_a_row_per_system_and_rate() -> None:
    lines = [
        {"benchmark": "latency.idle", "system": "strom x", "idle_cpu_pct": 0.4},
        _line("strom x", 200, 1.5),
        _line("strom x", 2_000, 2.5),
        {"benchmark": "latency", "system": "bytewax", "skipped": "no venv"},
        {"benchmark": "latency", "system": "quix y", "failed": "boom"},
    ]
    rows = report.table_rows(lines)
    assert rows[2:] == [
        "| strom x | 200 | 1.5 | 3.0 | - | 900 / 900 (+2 again) | 0.50 | 0.4 |",
        "| strom x | 2,000 | 2.5 | 5.0 | - | 900 / 900 (+2 again) | 0.50 | 0.4 |",
    ]
    text = report.markdown(lines, "Latency")
    assert "for 5 s per row" in text and "3 partitions" in text
    assert "- bytewax: skipped (no venv)" in text and "- quix y: failed (boom)" in text


def test_suite_runs_strom_at_a_tiny_rate(tmp_path: Path) -> None:
    params = replace(runner.QUICK, rates=(20, 100), seconds=1.0, idle_s=0.5)
    lines: list[dict[str, Any]] = []
    runner.run_suite(params, lines.append, with_peers=False)
    assert [x["benchmark"] for x in lines] == ["latency.idle", "latency", "latency"], lines
    idle, *phases = lines
    assert idle["system"].startswith("strom") and idle["idle_cpu_s"] >= 0
    for line, rate in zip(phases, (20, 100), strict=True):
        assert line["params"] == {"rate": rate, "seconds": 1.0, "partitions": 3}
        assert line["received"] == line["expected"] == rate - rate // 10
        assert line["lost"] == 0
        assert 0 < line["p50_ms"] <= line["p99_ms"] <= line["max_ms"]
        assert isinstance(line["meets_target"], bool)
    out = tmp_path / "latency.md"
    report.write_markdown(lines, out, "Latency")
    assert "| strom" in out.read_text()
