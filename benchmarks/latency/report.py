"""Latency results as Markdown in benchmarks/results/ (and the rows the README quotes)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from benchmarks.report import machine_summary

__all__ = ["markdown", "results", "table_rows", "write_markdown"]

_HEADER = [
    "| system | events/s | p50 ms | p99 ms | max ms | received / expected | engine CPU s "
    "| idle CPU % |",
    "|---|---|---|---|---|---|---|---|",
]


def results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines that carry a phase's latencies."""
    return [x for x in lines if x.get("benchmark") == "latency" and "received" in x]


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def table_rows(lines: list[dict[str, Any]]) -> list[str]:
    """The Markdown table: one row per system and rate, rates ascending within a system."""
    idle = {x["system"]: x["idle_cpu_pct"] for x in lines if x["benchmark"] == "latency.idle"}
    out = list(_HEADER)
    for x in results(lines):
        got = f"{x['received']:,} / {x['expected']:,}"
        if x.get("duplicates"):
            got += f" (+{x['duplicates']:,} again)"
        out.append(
            f"| {x['system']} | {x['params']['rate']:,} | {_ms(x['p50_ms'])} | "
            f"{_ms(x['p99_ms'])} | {_ms(x['max_ms'])} | {got} | {x['engine_cpu_s']:.2f} | "
            f"{idle.get(x['system'], '-')} |"
        )
    return out


def markdown(lines: list[dict[str, Any]], title: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    phases = results(lines)
    seconds = phases[0]["params"]["seconds"] if phases else 0
    partitions = phases[0]["params"]["partitions"] if phases else 0
    out = [
        f"# {title}",
        "",
        f"Taken {stamp} on {machine_summary()}.",
        "",
        f"One stateless pipeline (Kafka -> filter keeping 9 in 10 -> Kafka, {partitions} "
        "partitions, at-least-once, each engine's defaults) per system, in its own process, "
        "against one strom broker on loopback. A producer process sends JSON events at a fixed "
        f"rate for {seconds:g} s per row, each carrying the time it was handed to the client; a "
        "consumer process reads the output topic. Latency = receive time - send time: two broker "
        "hops plus the engine. `engine CPU s` is the engine process's CPU time during the row; "
        "`idle CPU %` its CPU while no data arrived (before the first row).",
        "",
        *table_rows(lines),
        "",
    ]
    out += [f"- {x['system']}: skipped ({x['skipped']})" for x in lines if "skipped" in x]
    out += [f"- {x['system']}: failed ({x['failed']})" for x in lines if "failed" in x]
    return "\n".join(out).rstrip() + "\n"


def write_markdown(lines: list[dict[str, Any]], path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(lines, title), encoding="utf-8")
