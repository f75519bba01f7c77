"""``strom bench``: benchmarks with peers side by side (the ``benchmarks`` package)."""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

__all__ = ["bench"]

Line = dict[str, Any]


def _checkout() -> Path | None:
    """The strom checkout holding ``benchmarks/`` (not part of the wheel): the working
    directory, else the source tree strom runs from (an editable install)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / "benchmarks" / "__init__.py").is_file():
            return root
    return None


def _load(module: str) -> Any:
    """Import a benchmark module from the checkout; its worker processes (``python -m
    benchmarks...``) find it too, through ``PYTHONPATH``."""
    root = _checkout()
    if root is not None:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if str(root) not in paths:  # for worker processes started from another directory
            os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, paths)])
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise click.ClickException(
            f"the benchmark suite is not importable ({exc}): it ships in strom's source "
            "repository, not in the package; run strom bench from a checkout, with "
            "pip install -e '.[bench]'"
        ) from exc


@click.command()
@click.argument(
    "which",
    type=click.Choice(["broker", "nexmark", "latency", "eos", "ml", "batch", "all"]),
)
@click.option("--quick", is_flag=True, help="A short run (a few minutes per suite).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result line.")
@click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("benchmarks/results"),
    show_default=True,
)
@click.option(
    "--no-peers",
    is_flag=True,
    help="Nexmark, latency and ml: strom alone (results go to <suite>[-quick]-strom.md).",
)
def bench(which: str, quick: bool, as_json: bool, results_dir: Path, no_peers: bool) -> None:
    """Measure strom beside its peers in one run; results also go to --results-dir.

    ``all`` runs the broker suite, then Nexmark, then latency, then ``eos`` (what exactly-once
    costs: throughput against at-least-once, latency per guarantee, checkpoint cost), then
    ``ml`` (window features + model scoring per core and latency, beside Quix and Bytewax),
    then ``batch`` (TPC-H Q1, Q3, Q5, Q6, Q12, Q18 beside Polars, DuckDB and PySpark; quick:
    scale factor 1, else 10; then each query the local engine runs with one worker killed;
    then the 2,000-file group-by)."""
    console = Console(stderr=as_json)
    suffix = "-quick" if quick else ""
    if which in ("broker", "all"):
        suite = _load("benchmarks.broker")
        report = _load("benchmarks.report")
        lines = _run(suite.run, quick, as_json, console)
        path = results_dir / f"broker{suffix}.md"
        report.write_markdown(lines, path, "Broker benchmark")
        _done(console, as_json, _broker_table(lines), path)
    if which in ("nexmark", "all"):
        suite = _load("benchmarks.nexmark.runner")
        report = _load("benchmarks.nexmark.report")
        lines = _run(functools.partial(suite.run, peers=not no_peers), quick, as_json, console)
        suffix += "-strom" if no_peers else ""
        path = results_dir / f"nexmark{suffix}.md"
        chart = results_dir / f"nexmark{suffix}.png"
        title = "Nexmark" + (" (quick)" if quick else "")
        drawn = report.write_chart(lines, chart, title)
        report.write_markdown(lines, path, title + " benchmark", chart.name if drawn else None)
        _done(console, as_json, _nexmark_table(lines), path)
    if which in ("latency", "all"):
        suite = _load("benchmarks.latency.runner")
        report = _load("benchmarks.latency.report")
        lines = _run(functools.partial(suite.run, peers=not no_peers), quick, as_json, console)
        name = "latency" + ("-quick" if quick else "") + ("-strom" if no_peers else "")
        path = results_dir / f"{name}.md"
        report.write_markdown(lines, path, "Latency" + (" (quick)" if quick else "") + " benchmark")
        _done(console, as_json, _latency_table(lines), path)
    if which in ("eos", "all"):
        suite = _load("benchmarks.eos.runner")
        report = _load("benchmarks.eos.report")
        lines = _run(suite.run, quick, as_json, console)
        path = results_dir / f"eos{'-quick' if quick else ''}.md"
        report.write(lines, path, "Exactly-once" + (" (quick)" if quick else "") + " benchmark")
        _done(console, as_json, _eos_table(lines), path)
    if which in ("ml", "all"):
        suite = _load("benchmarks.ml.runner")
        report = _load("benchmarks.ml.report")
        lines = _run(functools.partial(suite.run, peers=not no_peers), quick, as_json, console)
        name = "ml" + ("-quick" if quick else "") + ("-strom" if no_peers else "")
        path = results_dir / f"{name}.md"
        report.write_markdown(lines, path, "ML" + (" (quick)" if quick else "") + " benchmark")
        _done(console, as_json, _ml_table(lines), path)
    if which in ("batch", "all"):
        tpch = _load("benchmarks.tpch.runner")
        lines = _run(tpch.run, quick, as_json, console)
        paths = _load("benchmarks.tpch.report").write(lines, quick=quick, directory=results_dir)
        _done(console, as_json, _batch_table(lines), paths[0])
        faults = _load("benchmarks.tpch.faults")
        lines = _run(faults.run, quick, as_json, console)
        path = results_dir / f"batch-faults{suffix}.md"
        faults.write_markdown(lines, path)
        _done(console, as_json, _faults_table(lines), path)
        files = _load("benchmarks.batch_files")
        lines = _run(files.run, quick, as_json, console)
        path = results_dir / f"batch-files{suffix}.md"
        files.write_markdown(lines, path)
        _done(console, as_json, _batch_table(lines), path)


def _run(
    run: Callable[[bool, Callable[[Line], None]], None],
    quick: bool,
    as_json: bool,
    console: Console,
) -> list[Line]:
    lines: list[Line] = []

    def emit(line: Line) -> None:
        lines.append(line)
        if as_json:
            click.echo(json.dumps(line))
        else:
            console.print(_describe(line))

    run(quick, emit)
    return lines


def _done(console: Console, as_json: bool, table: Table, path: Path) -> None:
    if not as_json:
        console.print(table)
    console.print(f"written to {path}")


def _describe(line: Line) -> str:
    query = line.get("params", {}).get("query", "")
    if line["benchmark"].startswith("eos."):
        return _describe_eos(line)
    if line["benchmark"].startswith("batch."):
        return _describe_batch(line)
    if line["benchmark"] == "latency.idle":
        return f"{line['system']} idle: {line['idle_cpu_pct']} % CPU"
    if "skipped" in line:
        return f"{line['system']}: skipped ({line['skipped']})"
    if "na" in line:
        return f"{line['benchmark']} {line['system']}: n/a ({line['na']})"
    if "failed" in line:
        return f"{line['benchmark']} {line['system']}: failed ({line['failed']})"
    if line["benchmark"].startswith("ml."):
        return _describe_ml(line)
    if line["benchmark"].startswith("ceiling."):
        return f"{line['benchmark']}: {line['mb_per_s']:,.0f} MB/s"
    if line["benchmark"] == "latency":
        return (
            f"latency {line['system']} at {line['params']['rate']:,}/s: p50 {line['p50_ms']} ms, "
            f"p99 {line['p99_ms']} ms, max {line['max_ms']} ms, "
            f"{line['received']:,}/{line['expected']:,} received"
        )
    if line["benchmark"] == "nexmark.load":
        return (
            f"nexmark: {line['events_loaded']:,} events generated in {line['generate_s']} s, "
            f"loaded in {line['load_s']} s"
        )
    if line["benchmark"].startswith("nexmark."):
        return (
            f"{query} {line['system']}: {line['events_per_s']} events/s, "
            f"{line['events_per_core_s']} events/core-s, correct={line['correct']}"
        )
    return (
        f"{line['benchmark']} {line['system']} {line['params']}: "
        f"{line['mb_per_s']} MB/s, correct={line['correct']}"
    )


def _broker_table(lines: list[Line]) -> Table:
    table = Table(title="broker")
    for column in (
        "benchmark",
        "system",
        "params",
        "MB/s",
        "rec/s",
        "broker cpu s",
        "rec/core-s",
        "p50 ms",
        "p99 ms",
        "ok",
    ):
        table.add_column(column)
    for x in lines:
        if "events" not in x:
            continue
        params = " ".join(f"{k}={v}" for k, v in x["params"].items())
        table.add_row(
            x["benchmark"],
            x["system"],
            params,
            str(x["mb_per_s"]),
            str(x["events_per_s"]),
            str(x["cpu_s"]),
            str(x["events_per_core_s"]),
            str(x["p50_ms"]),
            str(x["p99_ms"]),
            str(x["correct"]),
        )
    return table


def _nexmark_table(lines: list[Line]) -> Table:
    table = Table(title="nexmark")
    for column in (
        "query",
        "system",
        "events",
        "wall s",
        "cpu s",
        "events/s",
        "events/core-s",
        "target",
        "strom/peer",
        "ok",
    ):
        table.add_column(column)
    for x in lines:
        query = x.get("params", {}).get("query")
        if query is None:
            continue
        if "events_per_s" not in x:
            reason = x.get("na") or x.get("failed") or ""
            table.add_row(query, x["system"], "n/a", reason[:60], *[""] * 5, "-")
            continue
        table.add_row(
            query,
            x["system"],
            f"{x['events']:,}",
            str(x["wall_s"]),
            str(x["cpu_s"]),
            f"{x['events_per_s']:,}" if x["events_per_s"] else "-",
            f"{x['events_per_core_s']:,}" if x["events_per_core_s"] else "-",
            f"{x['target_events_per_core_s']:,}" if x.get("target_events_per_core_s") else "-",
            str(x.get("ratio", "-")),
            str(x["correct"]),
        )
    return table


def _latency_table(lines: list[Line]) -> Table:
    table = Table(title="latency (ms, end to end)")
    for column in ("system", "events/s", "p50", "p99", "max", "received", "engine cpu s"):
        table.add_column(column)
    for x in lines:
        if x.get("benchmark") != "latency" or "received" not in x:
            continue
        table.add_row(
            x["system"],
            f"{x['params']['rate']:,}",
            str(x["p50_ms"]),
            str(x["p99_ms"]),
            str(x["max_ms"]),
            f"{x['received']:,}/{x['expected']:,}",
            str(x["engine_cpu_s"]),
        )
    return table


def _describe_eos(line: Line) -> str:
    p = line.get("params", {})
    kind = line["benchmark"]
    if "failed" in line:
        return f"{kind} {p}: failed ({line['failed']})"
    if kind == "eos.load":
        return f"eos: {line['events_loaded']:,} Nexmark events loaded in {line['load_s']} s"
    if kind == "eos.run":
        return (
            f"{p['query']} {p['mode']} interval={p['interval_ms']}: "
            f"{line['events_per_core_s']:,} events/core-s, {line['checkpoints']} checkpoints, "
            f"correct={line['correct']}"
        )
    if kind == "eos.throughput":
        return (
            f"{p['query']} at {p['interval_ms']} ms: EOS/ALO per core "
            f"{line['eos_over_alo_per_core']} (rounds {line['eos_over_alo_per_core_rounds']})"
        )
    if kind == "eos.latency":
        return (
            f"latency {p['mode']} at {p['rate']:,}/s: p50 {line['p50_ms']} ms, "
            f"p99 {line['p99_ms']} ms, {line['received']:,}/{line['expected']:,} received"
        )
    return (
        f"checkpoint {line['state_mb']} MB: pause {line['pause_ms']} ms, duration "
        f"{line['duration_ms']} ms, recovery {line['recovery_ms']} ms"
    )


def _eos_table(lines: list[Line]) -> Table:
    table = Table(title="exactly-once over at-least-once (events per core-second)")
    for column in ("query", "interval", "none", "ALO", "EOS", "EOS/ALO", "target", "ok"):
        table.add_column(column)
    for x in lines:
        if x["benchmark"] != "eos.throughput":
            continue
        p = x["params"]
        table.add_row(
            p["query"],
            f"{p['interval_ms']} ms",
            str(x["none_events_per_core_s"]),
            str(x["alo_events_per_core_s"]),
            str(x["eos_events_per_core_s"]),
            str(x["eos_over_alo_per_core"]),
            "-" if x["target"] is None else f">= {x['target']}",
            str(x["correct"]),
        )
    return table


def _describe_ml(line: Line) -> str:
    if line["benchmark"] == "ml.throughput":
        return (
            f"ml {line['system']}: {line['events_per_s']:,} events/s, "
            f"{line['events_per_core_s']:,} events/core-s, "
            f"{line['predictions']:,}/{line['expected']:,} predictions, checked={line['checked']}"
        )
    return (
        f"ml latency {line['system']} at {line['params']['rate']:,}/s: p50 {line['p50_ms']} ms, "
        f"p99 {line['p99_ms']} ms, {line['received']:,}/{line['expected']:,} windows predicted"
    )


def _ml_table(lines: list[Line]) -> Table:
    table = Table(title="ml: window features + scoring")
    for column in ("system", "events/core-s", "checked", "rate", "p50 ms", "p99 ms", "predicted"):
        table.add_column(column)
    for x in lines:
        if x["benchmark"] == "ml.throughput" and "cpu_s" in x:
            table.add_row(x["system"], f"{x['events_per_core_s']:,}", str(x["checked"]), *[""] * 4)
        elif x["benchmark"] == "ml.latency" and "received" in x:
            table.add_row(
                x["system"],
                "",
                "",
                f"{x['params']['rate']:,}/s",
                str(x["p50_ms"]),
                str(x["p99_ms"]),
                f"{x['received']:,}/{x['expected']:,}",
            )
    return table


def _describe_batch(line: Line) -> str:
    if line["benchmark"] == "batch.faults":
        if "ratio" not in line:
            why = line.get("failed") or line.get("unsupported") or "kill missed"
            return f"{line['query']} one worker killed: {str(why).split(':')[0]}"
        return f"{line['query']} one worker killed: {line['ratio']:.2f}x the clean wall time"
    what = line.get("query") or f"group-by {line['params']['groups']:,} keys"
    if "unsupported" in line or "failed" in line:
        reason = line.get("unsupported") or line.get("failed")
        return f"{what} {line['system']}: {str(reason).split(';')[0]}"
    return f"{what} {line['system']}: {line['wall_s']:.2f} s, correct={line['correct']}"


def _faults_table(lines: list[Line]) -> Table:
    table = Table(title="batch: one worker killed (local engine, wall s)")
    for column in ("query", "clean s", "killed s", "killed / clean", "ok"):
        table.add_column(column)
    for x in lines:
        if "failed" in x or "unsupported" in x:
            why = str(x.get("failed") or "not run by the local engine")
            table.add_row(x["query"], why, "", "", "-")
            continue
        killed = f"{x['killed_wall_s']:.2f}" if "killed_wall_s" in x else "kill missed"
        ratio = f"{x['ratio']:.2f}x" if "ratio" in x else ""
        table.add_row(x["query"], f"{x['clean_wall_s']:.2f}", killed, ratio, str(x["correct"]))
    return table


def _batch_table(lines: list[Line]) -> Table:
    table = Table(title="batch (wall seconds after imports)")
    for column in ("query", "system", "wall s", "peak MiB", "ok"):
        table.add_column(column)
    for x in lines:
        what = x.get("query") or f"{x['params']['groups']:,} groups"
        if "wall_s" not in x:
            reason = str(x.get("unsupported") or x.get("failed"))
            table.add_row(what, x["system"], reason.split(";")[0][:60], "", "-")
            continue
        peak = x.get("peak_mib", x.get("peak_resident_mib", 0.0))
        table.add_row(what, x["system"], f"{x['wall_s']:.2f}", f"{peak:,.0f}", str(x["correct"]))
    return table
