"""``strom bench``: benchmarks with peers side by side (the ``benchmarks`` package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

__all__ = ["bench"]


def _load_suite() -> Any:
    try:
        from benchmarks import broker as suite
    except ImportError as exc:
        raise click.ClickException(
            f"the benchmark suite is not importable ({exc}); run from a strom checkout"
        ) from exc
    return suite


@click.command()
@click.argument("which", type=click.Choice(["broker", "nexmark", "all"]))
@click.option("--quick", is_flag=True, help="A short run (a few minutes).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result line.")
@click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("benchmarks/results"),
    show_default=True,
)
def bench(which: str, quick: bool, as_json: bool, results_dir: Path) -> None:
    """Measure strom beside its peers in one run; results also go to --results-dir."""
    if which == "nexmark":
        raise click.ClickException("the Nexmark benchmark needs the stream engine (not built yet)")
    suite = _load_suite()
    console = Console(stderr=as_json)
    lines: list[dict[str, Any]] = []

    def emit(line: dict[str, Any]) -> None:
        lines.append(line)
        if as_json:
            click.echo(json.dumps(line))
        else:
            console.print(_describe(line))

    suite.run(quick, emit)
    from benchmarks.report import write_markdown

    name = "broker-quick.md" if quick else "broker.md"
    write_markdown(lines, results_dir / name, "Broker benchmark")
    if not as_json:
        console.print(_table(lines))
        console.print(f"written to {results_dir / name}")
    if which == "all":
        console.print("[yellow]nexmark: skipped, the stream engine is not built yet[/]")


def _describe(line: dict[str, Any]) -> str:
    if "skipped" in line:
        return f"{line['system']}: skipped ({line['skipped']})"
    if line["benchmark"].startswith("ceiling."):
        return f"{line['benchmark']}: {line['mb_per_s']:,.0f} MB/s"
    return (
        f"{line['benchmark']} {line['system']} {line['params']}: "
        f"{line['mb_per_s']} MB/s, correct={line['correct']}"
    )


def _table(lines: list[dict[str, Any]]) -> Table:
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
