"""Helpers shared by the CLI tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result

from strom.cli.main import cli

#: The ``strom`` fixture: ``strom(*args, input=..., ok=True) -> Result``.
Run = Callable[..., Result]


def invoke(bootstrap: str, *args: str, input: str | bytes | None = None) -> Result:
    """Run ``strom ARGS --bootstrap-server BOOTSTRAP`` in-process (stdin from ``input``)."""
    argv = [*args, "--bootstrap-server", bootstrap]
    return CliRunner().invoke(cli, argv, input=input, catch_exceptions=False)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse ``strom consume --output json`` output."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the rich tables in ``text`` (header rows included)."""
    return [[cell.strip() for cell in line.split("│")] for line in text.splitlines() if "│" in line]


def row(text: str, first: str) -> list[str]:
    """The table row whose first cell is ``first``."""
    found = [cells for cells in table_rows(text) if cells[0] == first]
    assert len(found) == 1, (first, text)
    return found[0]
