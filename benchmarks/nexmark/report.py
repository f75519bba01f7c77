"""Nexmark results as Markdown and a PNG chart in benchmarks/results/."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from benchmarks.report import machine_summary

__all__ = ["write_chart", "write_markdown"]


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, int | float):
        return f"{round(value):,}"
    return str(value)


def results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines that carry measurements."""
    return [x for x in lines if "events_per_s" in x]


def write_markdown(lines: list[dict[str, Any]], path: Path, title: str, chart: str | None) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {title}", "", f"Taken {stamp} on {machine_summary()}.", ""]
    for x in lines:
        if x["benchmark"] == "nexmark.load":
            p = x["params"]
            out += [
                f"{x['events_loaded']:,} events (seed {p['seed']}, {p['rate']:,} events/s of "
                f"event time) into {p['partitions']} partitions per topic: generated in "
                f"{x['generate_s']} s, produced as JSON in {x['load_s']} s.",
                "",
            ]
    runs = max((x.get("runs", 1) for x in results(lines)), default=1)
    out += [
        "`cpu s` is the CPU time of the engine's own process(es) during the run; events/core-s "
        "divides the events read by it. `target` is the issue's goal for strom."
        + (
            f" Each strom row is the median (by CPU time) of {runs} runs; each peer ran once."
            if runs > 1
            else ""
        ),
        "",
        "| query | system | events | rows out | wall s | cpu s | events/s | events/core-s "
        "| target | strom/peer | correct |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in results(lines):
        out.append(
            f"| {x['params'].get('query', '')} | {x['system']} | {_num(x['events'])} | "
            f"{_num(x.get('rows'))} | {_num(x['wall_s'], 2)} | {_num(x['cpu_s'], 2)} | "
            f"{_num(x['events_per_s'])} | {_num(x['events_per_core_s'])} | "
            f"{_num(x.get('target_events_per_core_s'))} | {_num(x.get('ratio'), 2)} | "
            f"{x['correct']} |"
        )
    out.append("")
    for x in lines:
        query = x.get("params", {}).get("query", "")
        if "na" in x:
            out.append(f"- {query} {x['system']}: n/a ({x['na']})")
        if "failed" in x:
            out.append(f"- {query} {x['system']}: failed: {x['failed']}")
        if "skipped" in x:
            out.append(f"- {query} {x['system']}: skipped ({x['skipped']})".replace("-  ", "- "))
        if x.get("mismatch"):
            out.append(f"- {query} {x['system']}: output differs: {x['mismatch']}")
    if chart is not None:
        out += ["", f"![events per core-second]({chart})"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def write_chart(lines: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Events per core-second per query and system (log scale); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [x for x in results(lines) if x["events_per_core_s"]]
    queries = sorted({x["params"]["query"] for x in rows})
    systems = sorted({x["system"] for x in rows}, key=lambda s: (not s.startswith("strom"), s))
    if not queries:
        return False
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(queries)), 4))
    for i, system in enumerate(systems):
        values = {
            x["params"]["query"]: x["events_per_core_s"] for x in rows if x["system"] == system
        }
        xs = [q + i * width for q in range(len(queries))]
        ax.bar(xs, [values.get(q, 0) for q in queries], width, label=system)
    for q, query in enumerate(queries):
        target = next(
            (x.get("target_events_per_core_s") for x in rows if x["params"]["query"] == query),
            None,
        )
        if target:
            ax.hlines(target, q - 0.1, q + 0.8, colors="black", linestyles="dashed")
    ax.set_xticks([q + 0.4 - width / 2 for q in range(len(queries))], queries)
    ax.set_yscale("log")
    ax.set_ylabel("events per core-second")
    ax.set_title(title + " (dashed: target)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
