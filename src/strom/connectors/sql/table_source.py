"""SQL tables as bounded sources: ``p.source(SQLiteTable(path, "devices", key="device"))``.

The same :class:`~strom.connectors.sql.sqlite_lookup.KeyedTable` object that serves lookup joins
is a :class:`~strom.engine.contracts.BoundedSource` of one partition: every row of the table
(its ``key`` and ``columns``), **in key order** (ties: SQLite's ``rowid``, PostgreSQL's
``ctid``), in batches of ``batch_rows``. The order is what makes a position meaningful: a
position is the number of rows delivered, and a reader seeked to it (another process, after a
restart) runs the query again and skips that many rows (a count past the end of a table that
lost rows since ends the pass). PostgreSQL reads each pass in one
``REPEATABLE READ`` transaction through a server-side cursor (one snapshot, the rows streamed,
not held); SQLite reads through one cursor of a read-only connection (one snapshot under WAL).
A table that changed between a position and a seek to it continues with the *new* table's rows
after the first ``n`` in key order: a bounded read of a table that is being written is a
snapshot, not a change stream.

Used by every backend: the streaming executor and the bounded runner poll it; the Spark backend
scans it on the driver (no JDBC driver needed) and hands Spark the rows as Arrow, so it suits
dimension tables, not tables larger than the driver's memory.
"""

from __future__ import annotations

from typing import Protocol

import polars as pl

from strom.engine.contracts import END_OF_PARTITION, PollResult, Position, int_field

__all__ = ["BATCH_ROWS", "RowCursor", "TablePartition"]

BATCH_ROWS = 65_536
"""Rows per batch a table source delivers, by default."""


class RowCursor(Protocol):
    """An open read of a table's rows in key order, from some offset on."""

    def fetch(self, n: int) -> list[tuple[object, ...]]:
        """The next at most ``n`` rows; fewer only at the end."""
        ...

    def close(self) -> None: ...


class TableSource(Protocol):
    """What a :class:`TablePartition` needs of its table."""

    batch_rows: int

    def schema(self) -> pl.Schema | None: ...

    def open_rows(self, offset: int) -> tuple[pl.Schema, RowCursor]:
        """The schema of the rows, and a cursor over them after the first ``offset``."""
        ...

    def adopt(self, partition: TablePartition) -> None:
        """Keep ``partition`` to close with the table (its open read must not outlive it)."""
        ...


class TablePartition:
    """The reader of a table source's only partition (see the module docstring)."""

    def __init__(self, table: TableSource, owner: str) -> None:
        self._table = table
        self._owner = owner
        self._rows = 0  # delivered so far
        self._cursor: RowCursor | None = None
        self._schema: pl.Schema | None = None
        self._ended = False
        table.adopt(self)

    def poll(self) -> PollResult:
        if self._ended:
            return END_OF_PARTITION
        if self._cursor is None:
            self._schema, self._cursor = self._table.open_rows(self._rows)
        rows = self._cursor.fetch(self._table.batch_rows)
        if not rows:
            self._close_cursor()
            self._ended = True
            return END_OF_PARTITION
        assert self._schema is not None
        try:  # built before the position moves: a refused batch is not counted as delivered
            batch = pl.DataFrame(rows, schema=self._schema, orient="row", strict=False)
        except (pl.exceptions.ComputeError, TypeError, OverflowError) as exc:
            raise ValueError(
                f"{self._owner}: rows {self._rows}..{self._rows + len(rows) - 1} (in key order) "
                f"do not fit the schema {dict(self._schema)}: {str(exc).splitlines()[0]}"
            ) from None
        self._rows += len(rows)
        if len(rows) < self._table.batch_rows:  # the last batch: release the read at once
            self._close_cursor()
            self._ended = True
        return batch

    def position(self) -> Position:
        return {"rows": self._rows}

    def seek(self, position: Position) -> None:
        """Continue after the first ``rows`` rows. A count past the table's end is accepted
        (the table may have lost rows since): the pass is then over. ``PositionError`` for
        anything but a count of rows."""
        rows = int_field(position, "rows", self._owner)
        self._close_cursor()
        self._rows, self._ended = rows, False

    def close(self) -> None:
        self._close_cursor()

    def _close_cursor(self) -> None:
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            cursor.close()


def scan(table: TableSource, owner: str) -> pl.LazyFrame:
    """Every row of ``table`` as one frame (the bounded runner's read), in key order."""
    reader = TablePartition(table, owner)
    frames: list[pl.DataFrame] = []
    try:
        while isinstance(batch := reader.poll(), pl.DataFrame):
            frames.append(batch)
    finally:
        reader.close()
    if not frames:
        schema = table.schema()
        return pl.LazyFrame(schema=schema)
    return pl.concat(frames).lazy()
