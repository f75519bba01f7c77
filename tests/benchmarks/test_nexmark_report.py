"""The Nexmark report: Markdown, chart and the CLI's table from result lines (no runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.nexmark.report import write_chart, write_markdown
from rich.console import Console

from strom.cli.bench import _describe, _nexmark_table

PARAMS = {"events": 1_000, "partitions": 2, "rate": 100_000, "seed": 42}


def _line(query: str, system: str, per_core: int, **extra: Any) -> dict[str, Any]:
    return {
        "benchmark": f"nexmark.{query}",
        "system": system,
        "params": PARAMS | {"query": query},
        "events": 920,
        "rows": 5,
        "wall_s": 0.5,
        "cpu_s": 0.4,
        "events_per_s": 1_840,
        "events_per_core_s": per_core,
        "p50_ms": None,
        "p99_ms": None,
        "correct": True,
    } | extra


LINES = [
    {
        "benchmark": "nexmark.load",
        "system": "strom 0.1.0",
        "params": PARAMS,
        "generate_s": 0.1,
        "load_s": 0.2,
        "events_loaded": 1_000,
    },
    _line("q1", "strom 0.1.0", 2_300, target_events_per_core_s=1_000_000),
    _line("q1", "peer 1.0", 1_000, ratio=2.3),
    _line("q5", "peer 1.0", 10, correct=False, mismatch="3 rows, expected 4"),
    {
        "benchmark": "nexmark.q3",
        "system": "strom 0.1.0",
        "params": PARAMS | {"query": "q3"},
        "na": "needs a join",
    },
    {"benchmark": "nexmark", "system": "other", "skipped": "not installed"},
]


def test_markdown_lists_results_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "nexmark.md"
    write_markdown(LINES, path, "Nexmark", "nexmark.png")
    text = path.read_text()
    assert "| q1 | strom 0.1.0 | 920 |" in text
    assert "| 2.30 |" in text  # the ratio
    assert "q3 strom 0.1.0: n/a (needs a join)" in text
    assert "q5 peer 1.0: output differs: 3 rows, expected 4" in text
    assert "other: skipped (not installed)" in text
    assert "1,000 events" in text
    assert "![events per core-second](nexmark.png)" in text


def test_chart_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "nexmark.png"
    assert write_chart(LINES, path, "Nexmark")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_table_and_lines_render() -> None:
    console = Console(record=True, width=200)
    console.print(_nexmark_table(LINES))
    text = console.export_text()
    assert "q1" in text and "q3" in text and "2,300" in text
    for line in LINES:
        assert _describe(line)
