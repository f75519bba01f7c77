"""``strom demo``: the whole real-time ML loop on NASA's Shuttle sensor data (see
:mod:`strom.demo.ml_scenario`; needs ``strom[ml]``); ``strom demo iot``: the end-to-end IoT
scenario (see :mod:`strom.demo`)."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import click

from strom.cli.output import console

__all__ = ["demo"]

_ML_EXTRA = ("sklearn", "skops", "river")


@click.group(invoke_without_command=True)
@click.option(
    "--devices",
    type=click.IntRange(min=3, max=999),
    default=40,
    show_default=True,
    help="Synthetic devices the readings are dealt to.",
)
@click.option(
    "--rows",
    type=click.IntRange(min=1_000),
    default=None,
    help="Use only the first ROWS Shuttle readings (default: all 49,097).",
)
@click.option(
    "--live-seconds",
    type=click.FloatRange(min=0),
    default=15.0,
    show_default=True,
    help="Wall-clock seconds the live part is produced over.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the layout.")
@click.option(
    "--postgres",
    metavar="DSN",
    default=None,
    help="Write the tables to this PostgreSQL database (or schema: its search_path) instead of "
    "SQLite; it must not hold them yet (strom[postgres]).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where files, models and ml.db go (default: a temporary directory, removed at the end).",
)
@click.pass_context
def demo(
    ctx: click.Context,
    devices: int,
    rows: int | None,
    live_seconds: float,
    seed: int,
    postgres: str | None,
    data_dir: Path | None,
) -> None:
    """NASA Shuttle sensor readings: history in Parquet files, features backfilled, a model
    trained point in time and registered; the live part through Kafka, the same features
    streaming, scored, into SQLite and an alerts topic, a second version promoted mid-stream;
    then quality, latency and the checks (exit 1 on any mismatch).

    `strom demo iot`: the IoT scenario (broker, event-time windows, a table join, SQLite)."""
    if ctx.invoked_subcommand is not None:
        given = [
            name
            for name in ctx.params
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise click.UsageError(
                f"--{given[0].replace('_', '-')} is an option of the ML loop (`strom demo`); "
                f"`strom demo {ctx.invoked_subcommand}` takes its own options after its name"
            )
        return
    missing = [m for m in _ML_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise click.ClickException(
            f"strom demo trains and scores models and needs strom's ml extra ({', '.join(missing)}"
            " missing): pip install 'strom[ml]'; `strom demo iot` runs without it"
        )
    from strom.demo.ml_scenario import MLDemoConfig, run_ml_demo  # keep `strom --help` fast

    out = console()
    config = MLDemoConfig(
        devices=devices, seed=seed, rows=rows, live_seconds=live_seconds, postgres=postgres
    )
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        result = run_ml_demo(config, data_dir, out)
    else:
        with tempfile.TemporaryDirectory(prefix="strom-demo-ml-") as tmp:
            result = run_ml_demo(config, Path(tmp), out)
    if not result.ok:
        raise click.ClickException("the loop's results do not match the offline recomputation")


@demo.command("iot")
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
def demo_iot(
    events: int,
    devices: int,
    seed: int,
    forever: bool,
    data_dir: Path | None,
) -> None:
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
