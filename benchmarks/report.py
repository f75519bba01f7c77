"""Benchmark results as a Markdown report in benchmarks/results/."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_summary", "write_markdown"]


def machine_summary() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    python = platform.python_version()
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {python}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_markdown(lines: list[dict[str, Any]], path: Path, title: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {title}", "", f"Taken {stamp} on {machine_summary()}.", ""]
    ceilings = [x for x in lines if x["benchmark"].startswith("ceiling.")]
    if ceilings:
        out += ["| ceiling | MB/s |", "|---|---|"]
        out += [f"| {x['benchmark'][8:]} | {_cell(x['mb_per_s'])} |" for x in ceilings]
        out.append("")
    results = [x for x in lines if "system" in x and "events" in x]
    if results:
        out += [
            "| benchmark | system | params | MB/s | records/s | broker CPU s | records/core-s "
            "| p50 ms | p99 ms | correct |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for x in results:
            params = ", ".join(f"{k}={v}" for k, v in x["params"].items())
            out.append(
                f"| {x['benchmark']} | {x['system']} | {params} | {_cell(x['mb_per_s'])} | "
                f"{_cell(x['events_per_s'])} | {_cell(x['cpu_s'])} | "
                f"{_cell(x['events_per_core_s'])} | {_cell(x['p50_ms'])} | "
                f"{_cell(x['p99_ms'])} | {x['correct']} |"
            )
        out.append("")
    out += [f"- {x['system']}: skipped ({x['skipped']})" for x in lines if "skipped" in x]
    out += [
        f"- {x['benchmark']} {x['system']} ({x['params']}): failed: {x['failed']}"
        for x in lines
        if "failed" in x
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
