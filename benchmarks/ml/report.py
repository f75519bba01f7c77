"""ML benchmark results as Markdown in benchmarks/results/ (and the rows the README quotes)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from benchmarks.report import machine_summary

__all__ = ["latency_rows", "markdown", "per_core_ratios", "throughput_rows", "write_markdown"]


def _throughput(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in lines if x.get("benchmark") == "ml.throughput" and "cpu_s" in x]


def _latency(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in lines if x.get("benchmark") == "ml.latency" and "received" in x]


def per_core_ratios(lines: list[dict[str, Any]]) -> dict[str, float]:
    """strom's events per CPU-second over each peer's (peers by system name)."""
    rows = _throughput(lines)
    strom = [x for x in rows if x["system"].startswith("strom")]
    if not strom or not strom[0]["events_per_core_s"]:
        return {}
    ours = strom[0]["events_per_core_s"]
    return {
        x["system"]: ours / x["events_per_core_s"]
        for x in rows
        if not x["system"].startswith("strom") and x["events_per_core_s"]
    }


def throughput_rows(lines: list[dict[str, Any]]) -> list[str]:
    ratios = per_core_ratios(lines)
    out = [
        "| system | events | events/s | events/s per core | strom per core | predictions "
        "| checked (max score diff) |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in _throughput(lines):
        ratio = ratios.get(x["system"])
        check = "yes" if x["checked"] else f"NO ({x['missing']} missing, {x['unknown']} unknown)"
        out.append(
            f"| {x['system']} | {x['events']:,} | {x['events_per_s']:,} | "
            f"{x['events_per_core_s']:,} | {'-' if ratio is None else f'{ratio:.1f}x'} | "
            f"{x['predictions']:,} / {x['expected']:,} | {check} ({x['max_score_diff']:.1e}) |"
        )
    return out


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def latency_rows(lines: list[dict[str, Any]]) -> list[str]:
    out = [
        "| system | events/s | p50 ms | p99 ms | max ms | predicted / windows (window ends) "
        "| engine CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in _latency(lines):
        out.append(
            f"| {x['system']} | {x['params']['rate']:,} | {_ms(x['p50_ms'])} | "
            f"{_ms(x['p99_ms'])} | {_ms(x['max_ms'])} | {x['received']:,} / {x['expected']:,} "
            f"({x['window_ends']:,}) | "
            f"{x['engine_cpu_s']:.2f} |"
        )
    return out


def markdown(lines: list[dict[str, Any]], title: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = _throughput(lines)
    params = rows[0]["params"] if rows else {}
    phases = _latency(lines)
    seconds = phases[0]["params"]["seconds"] if phases else 0
    out = [
        f"# {title}",
        "",
        f"Taken {stamp} on {machine_summary()}.",
        "",
        "One pipeline per system, each in its own process, against one strom broker on "
        f"loopback: JSON sensor readings keyed by device ({params.get('devices', '?')} devices, "
        f"{params.get('partitions', '?')} partitions) -> per-device tumbling window of "
        f"{params.get('window_ms', '?')} ms on event time (count, mean and max of two readings) "
        "-> a scikit-learn model (StandardScaler + LogisticRegression, `predict_proba`) scoring "
        "each closed window -> Kafka. strom: `FeatureView` + `Stream.predict` from its model "
        "store (one model call per micro-batch). Quix Streams: `tumbling_window().agg().final()` "
        "then a per-record `apply` calling the model. Bytewax: `fold_window` then a per-record "
        "`map` calling the model. Every system loads the same skops file.",
        "",
        "## Throughput",
        "",
        f"{params.get('events', 0):,} seeded readings pre-filled in the topic; each engine reads "
        "it to its end. `events/s per core` = events / CPU seconds (user + system, all threads) "
        "of the engine's process from the built dataflow (model loaded) to the end of input. "
        "Every prediction is read back and checked against a reference (Polars features, one "
        "`predict_proba` call): the same device-windows, once each, scores within 1e-9.",
        "",
        *throughput_rows(lines),
        "",
        "## Latency",
        "",
        f"The engine tails a fresh topic; a producer stamps each reading with the wall clock as "
        f"its event time, at each rate for {seconds:g} s. A window's features are final at its "
        "end, so latency = the time the prediction is received minus `window_end`: the wait for "
        "a reading past the window's end (strom: on every partition; Quix: on the window's "
        "partition; Bytewax: its clock follows system time), the engine, two broker hops. "
        "The windows of every device sharing an end close together, so a phase has only as many "
        "independent latencies as window ends: p99 is close to the worst window end. A window "
        "missing from `predicted` had all its readings dropped as late (Bytewax drops a reading "
        "its clock has passed). `engine CPU s` is the engine process's CPU time during the "
        "phase.",
        "",
        *latency_rows(lines),
        "",
    ]
    out += [f"- {x['system']}: skipped ({x['skipped']})" for x in lines if "skipped" in x]
    out += [
        f"- {x['system']} ({x['benchmark']}): failed ({x['failed']})"
        for x in lines
        if "failed" in x
    ]
    return "\n".join(out).rstrip() + "\n"


def write_markdown(lines: list[dict[str, Any]], path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(lines, title), encoding="utf-8")
