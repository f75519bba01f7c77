"""The exactly-once benchmark's results as Markdown and JSON in benchmarks/results/."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from benchmarks.report import machine_summary

__all__ = ["markdown", "write"]

Line = dict[str, Any]


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _interval(ms: int | None) -> str:
    if ms is None:
        return "none"
    return f"{ms} ms" if ms < 1_000 else f"{ms / 1000:g} s"


def markdown(lines: list[Line], title: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {title}", "", f"Taken {stamp} on {machine_summary()}.", ""]
    summaries = [x for x in lines if x["benchmark"] == "eos.throughput"]
    if summaries:
        out += [
            "## Throughput (Nexmark, Kafka → strom → Kafka)",
            "",
            "Events per second per core of the engine process, medians over rounds; the ratio "
            "is the median of each round's EOS/ALO (adjacent runs).",
            "",
            "| query | interval | no checkpoints | ALO | EOS | EOS/ALO per core (rounds) "
            "| EOS/ALO wall | EOS checkpoints | target | correct |",
            "|---|---|---:|---:|---:|---|---:|---:|---|---|",
        ]
        for x in summaries:
            p = x["params"]
            rounds = ", ".join(f"{r:.2f}" for r in x["eos_over_alo_per_core_rounds"])
            target = "-" if x["target"] is None else f"≥ {x['target']}: {x['meets_target']}"
            out.append(
                f"| {p['query']} | {_interval(p['interval_ms'])} "
                f"| {_n(x['none_events_per_core_s'])} | {_n(x['alo_events_per_core_s'])} "
                f"| {_n(x['eos_events_per_core_s'])} | **{_n(x['eos_over_alo_per_core'], 2)}** "
                f"({rounds}) | {_n(x['eos_over_alo_wall'], 2)} | {_n(x['eos_checkpoints'])} "
                f"| {target} | {x['correct']} |"
            )
        out.append("")
    runs = [x for x in lines if x["benchmark"] == "eos.run"]
    if runs:
        out += [
            "Every run, in the order taken:",
            "",
            "| round | query | mode | interval | events | wall s | CPU s | broker CPU s "
            "| events/core-s | checkpoints | max pause ms | correct |",
            "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for x in runs:
            p = x["params"]
            if "failed" in x:
                where = f"| {x['round']} | {p['query']} | {p['mode']} "
                out.append(f"{where}| {_interval(p['interval_ms'])} | failed: {x['failed']} |")
                continue
            out.append(
                f"| {x['round']} | {p['query']} | {p['mode']} | {_interval(p['interval_ms'])} "
                f"| {_n(x['events'])} | {_n(x['wall_s'], 2)} | {_n(x['cpu_s'], 2)} "
                f"| {_n(x['broker_cpu_s'], 2)} | {_n(x['events_per_core_s'])} "
                f"| {x['checkpoints']} | {_n(x['pause_ms_max'], 1)} | {x['correct']} |"
            )
        out.append("")
    latency = [x for x in lines if x["benchmark"] == "eos.latency"]
    if latency:
        out += [
            "## End-to-end latency (Kafka → filter → Kafka, read_committed consumer)",
            "",
            "| mode | events/s | p50 ms | p99 ms | max ms | received | engine CPU s |",
            "|---|---:|---:|---:|---:|---|---:|",
        ]
        for x in latency:
            p = x["params"]
            if "failed" in x:
                out.append(f"| {p.get('mode', '?')} | failed: {x['failed']} |")
                continue
            out.append(
                f"| {p['mode']} | {_n(p['rate'])} | {_n(x['p50_ms'], 1)} | {_n(x['p99_ms'], 1)} "
                f"| {_n(x['max_ms'], 1)} | {_n(x['received'])}/{_n(x['expected'])} "
                f"| {_n(x['engine_cpu_s'], 2)} |"
            )
        out.append("")
    costs = [x for x in lines if x["benchmark"] == "eos.checkpoint"]
    if costs:
        out += [
            "## Checkpoint cost against state size (one tumbling window, count/sum/max per key)",
            "",
            "| target | keys | state MB | pause ms | write ms (thread) | snapshot → commit ms "
            "| recovery ms | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in costs:
            p = x["params"]
            if "failed" in x:
                out.append(f"| {p['target_mb']:g} MB | {_n(p['keys'])} | failed: "
                           f"{x['failed']} |")  # fmt: skip
                continue
            out.append(
                f"| {p['target_mb']:g} MB | {_n(p['keys'])} | {_n(x['state_mb'], 1)} "
                f"| {_n(x['pause_ms'], 1)} | {_n(x['write_ms'], 1)} | {_n(x['duration_ms'], 1)} "
                f"| {_n(x['recovery_ms'], 1)} | {_n(x['peak_rss_mb'])} |"
            )
        out.append("")
    return "\n".join(out) + "\n"


def write(lines: list[Line], markdown_path: Path, title: str) -> Path:
    """``markdown_path`` and the same name with ``.json`` (every line); returns the latter."""
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(markdown(lines, title), encoding="utf-8")
    json_path = markdown_path.with_suffix(".json")
    json_path.write_text(json.dumps(lines, indent=1) + "\n", encoding="utf-8")
    return json_path
