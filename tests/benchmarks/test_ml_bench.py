"""The ML benchmark: its checks and its latency bookkeeping exactly, then the suite at a tiny size
(strom alone; the peers too under --run-slow). A smoke test: no timing is asserted, only that
predictions come out and are checked against the reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from benchmarks.ml import data, report, runner
from click.testing import CliRunner

from strom.cli.bench import bench


def _reference() -> pl.DataFrame:
    return pl.DataFrame(
        {"device": ["d00", "d01", "d00"], "window_end": [500, 500, 1000], "score": [0.1, 0.2, 0.3]}
    )


def test_check_accepts_the_reference_itself() -> None:
    result = runner.check(_reference(), _reference())
    assert result["checked"] is True
    assert (result["predictions"], result["duplicates"], result["missing"]) == (3, 0, 0)


def test_check_finds_duplicates_missing_unknown_and_wrong_scores() -> None:
    reference = _reference()
    got = pl.DataFrame(
        {
            "device": ["d00", "d00", "d01", "d09"],
            "window_end": [500, 500, 500, 500],
            "score": [0.1, 0.1, 0.2 + 1e-6, 0.5],
        }
    )
    result = runner.check(got, reference)
    assert result["checked"] is False
    assert (result["duplicates"], result["missing"], result["unknown"]) == (1, 1, 1)
    assert result["max_score_diff"] == pytest.approx(1e-6)
    # sums in another order move a score in its last bits: that is within the tolerance
    assert runner.check(reference.with_columns(pl.col("score") + 1e-12), reference)["checked"]


def test_summarize_assigns_each_window_to_the_phase_it_ends_in() -> None:
    phases = [
        runner.Sent(10, 1.0, 10, 0, 1_000, frozenset({(1, 500), (2, 1_000), (3, 1_500)})),
        runner.Sent(20, 1.0, 20, 1_000, 2_000, frozenset({(3, 1_500), (4, 2_000)})),
    ]
    received = np.array(
        [[1, 500, 510_000], [2, 1_000, 1_030_000], [3, 1_500, 1_520_000], [3, 1_500, 1_600_000]],
        dtype=np.int64,
    )
    first, second = runner.summarize(phases, received)
    assert (first["expected"], first["received"], first["lost"]) == (2, 2, 0)
    assert (first["p50_ms"], first["max_ms"]) == (10.0, 30.0)
    assert first["window_ends"] == second["window_ends"] == 2
    assert (second["expected"], second["received"], second["lost"]) == (2, 1, 1)
    assert second["p99_ms"] == 20.0  # the first arrival of (3, 1500) counts, not the second


def test_reference_features_are_the_view_in_polars() -> None:
    readings = data.events(3_000, seed=3)
    view = data.VIEW.compute_frame(readings.select(*data.EVENT))
    ours = view.select("device", "window_end", *data.FEATURES).sort("window_end", "device")
    reference = data.reference_features(readings).drop("anomaly")
    assert ours.height == reference.height > 0
    for column in data.FEATURES:
        assert np.allclose(ours[column].to_numpy(), reference[column].to_numpy(), rtol=1e-12)


TINY = runner.SuiteParams(events=5_000, rates=(100, 300), seconds=1.0, partitions=2)


def _assert_checked(lines: list[dict[str, Any]], systems: int) -> None:
    failed = [x for x in lines if "failed" in x]
    assert not failed, failed
    throughput = [x for x in lines if x["benchmark"] == "ml.throughput"]
    assert len(throughput) == systems
    for x in throughput:
        assert x["checked"] is True, x
        assert x["predictions"] == x["expected"] > 0
        assert x["events"] == 5_000 + 2  # the readings and one end record per partition
    latency = [x for x in lines if x["benchmark"] == "ml.latency"]
    assert [x["params"]["rate"] for x in latency] == [100, 300] * systems
    for x in latency:
        assert x["received"] > 0 and x["p50_ms"] is not None
        assert x["p50_ms"] <= x["p99_ms"] <= x["max_ms"]


def test_strom_bench_ml_runs_strom_at_a_tiny_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI, with the quick parameters shrunk: the JSON lines and the report."""
    monkeypatch.setattr(runner, "QUICK", TINY)
    args = ["ml", "--quick", "--no-peers", "--json", "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    _assert_checked(lines, systems=1)
    assert all("meets_target" not in x for x in lines)  # judged at 5,000/s only
    text = (tmp_path / "ml-quick-strom.md").read_text()
    assert "| strom" in text and "## Latency" in text


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_suite_runs_the_peers_at_a_tiny_size() -> None:
    """Slow: the first run creates each peer's venv (with scikit-learn and skops) from PyPI."""
    lines: list[dict[str, Any]] = []
    runner.run_suite(TINY, lines.append, with_peers=True)
    skipped = [x for x in lines if "skipped" in x]
    if skipped:
        pytest.skip(f"a peer cannot run here: {skipped}")
    _assert_checked(lines, systems=3)
    assert set(report.per_core_ratios(lines)) == {
        x["system"] for x in lines if x["benchmark"] == "ml.throughput"
    } - {lines[0]["system"]}
