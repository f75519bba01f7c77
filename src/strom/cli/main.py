"""The ``strom`` command: one module per command group, assembled here."""

from __future__ import annotations

import importlib
import logging

import click
from rich.logging import RichHandler

__all__ = ["cli", "main"]

_COMMANDS = {
    "broker": "strom.cli.broker:broker",
    "topics": "strom.cli.topics:topics",
    "produce": "strom.cli.produce:produce",
    "consume": "strom.cli.consume:consume",
    "groups": "strom.cli.groups:groups",
    "transactions": "strom.cli.transactions:transactions",
    "demo": "strom.cli.demo:demo",
    "bench": "strom.cli.bench:bench",
    "run": "strom.cli.run:run",
    "checkpoints": "strom.cli.checkpoints:checkpoints",
    "models": "strom.cli.models:models",
}


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs, so ``strom --help`` is fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="strom")
def cli(verbose: int) -> None:
    """strom: a Kafka-compatible broker, a stream engine and batch at scale, for ML."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )


def main() -> None:
    cli(prog_name="strom")
