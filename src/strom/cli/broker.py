"""``strom broker``: run the Kafka-compatible broker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from strom.broker import BrokerConfig, BrokerRuntime
from strom.broker.log import FlushPolicy, LogConfig
from strom.cli.options import parse_host_port

__all__ = ["broker"]


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("strom-data"),
    show_default=True,
    help="Where the log lives.",
)
@click.option(
    "--listen",
    default="127.0.0.1:9092",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on (port 0 picks a free one).",
)
@click.option(
    "--advertise",
    default=None,
    metavar="HOST",
    help="Host name given to clients in metadata (default: the listen host).",
)
@click.option(
    "--flush",
    "flush",
    default="never",
    show_default=True,
    metavar="always|never|MS",
    help="fsync after every write, leave it to the OS, or at most every MS milliseconds.",
)
@click.option(
    "--partitions",
    "default_partitions",
    default=1,
    show_default=True,
    type=int,
    help="Partitions of auto-created topics.",
)
@click.option("--no-auto-create", is_flag=True, help="Do not create topics on first use.")
@click.option(
    "--retention-ms",
    type=int,
    default=7 * 24 * 3600 * 1000,
    show_default=True,
    help="Default retention by time (-1: keep forever).",
)
@click.option(
    "--retention-bytes",
    type=int,
    default=-1,
    show_default=True,
    help="Default retention by size per partition (-1: unlimited).",
)
@click.option(
    "--segment-bytes",
    type=int,
    default=1 << 30,
    show_default=True,
    help="Roll segment files at this size.",
)
def broker(
    data_dir: Path,
    listen: str,
    advertise: str | None,
    flush: str,
    default_partitions: int,
    no_auto_create: bool,
    retention_ms: int,
    retention_bytes: int,
    segment_bytes: int,
) -> None:
    """Run the Kafka-compatible broker (any Kafka client can connect)."""
    host, port = parse_host_port(listen)
    try:
        policy = FlushPolicy.parse(flush)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--flush") from exc
    config = BrokerConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        advertised_host=advertise,
        auto_create_topics=not no_auto_create,
        default_partitions=default_partitions,
        log=LogConfig(
            flush=policy,
            retention_ms=retention_ms,
            retention_bytes=retention_bytes,
            segment_bytes=segment_bytes,
        ),
    )
    logging.getLogger("strom").setLevel(min(logging.getLogger().level, logging.INFO))
    runtime = BrokerRuntime(config)
    try:
        asyncio.run(runtime.run_until_signal())
    except OSError as exc:
        raise click.ClickException(f"cannot start the broker on {listen}: {exc}") from exc
