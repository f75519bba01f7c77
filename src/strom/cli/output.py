"""Rich output shared by the client commands: tables that never truncate what they show."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

__all__ = ["console", "table"]

#: Width used when stdout is not a terminal (a pipe, a file): wide enough not to wrap tables.
PIPE_WIDTH = 200


def console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr); in a pipe it is wide and colourless, so output greps."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(file=stream, width=width, stderr=stderr, highlight=False)


def table(*columns: str, title: str | None = None, numeric: tuple[str, ...] = ()) -> Table:
    """A table whose cells fold rather than truncate; ``numeric`` columns are right-aligned."""
    result = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in columns:
        result.add_column(
            name,
            justify="right" if name in numeric else "left",
            overflow="fold",
            no_wrap=False,
        )
    return result
