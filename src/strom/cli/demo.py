"""``strom demo``: the end-to-end IoT scenario (see :mod:`strom.demo`)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from strom.cli.output import console

__all__ = ["demo"]


@click.command()
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Readings to produce (bounded run).",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1, max=999),
    default=50,
    show_default=True,
    help="Number of sensor devices.",
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="Seed of the deterministic generator."
)
@click.option(
    "--forever", is_flag=True, help="Keep generating and streaming until Ctrl-C (skips the check)."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write demo.db (default: a temporary directory, removed at the end).",
)
def demo(events: int, devices: int, seed: int, forever: bool, data_dir: Path | None) -> None:
    """Sensor readings through Kafka, windowed, joined with a device table, into SQLite and
    an alerts topic; then every window is recomputed independently and compared."""
    from strom.demo import DemoConfig, run_demo  # keep `strom --help` fast

    out = console()
    config = DemoConfig(events=events, devices=devices, seed=seed)
    live = sys.stdout.isatty()
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        result = run_demo(config, data_dir, out, live=live, forever=forever)
    else:
        with tempfile.TemporaryDirectory(prefix="strom-demo-") as tmp:
            result = run_demo(config, Path(tmp), out, live=live, forever=forever)
    if not result.ok:
        raise click.ClickException("the pipeline's results do not match the recomputation")
