"""SQL tables as :class:`~strom.engine.contracts.LookupTable` for lookup joins, and as bounded
sources (:mod:`strom.connectors.sql.table_source`): what every dialect shares
(:class:`KeyedTable`), and SQLiteTable."""

from __future__ import annotations

import json
import sqlite3
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import polars as pl

from strom.connectors.sql.table_sink import quote
from strom.connectors.sql.table_source import BATCH_ROWS, RowCursor, TablePartition, scan

__all__ = ["KeyedTable", "SQLiteTable", "polars_type"]


class KeyedTable(ABC):
    """What the SQL lookup tables share: the ``key`` and ``columns`` to read, the schema they
    give, and one query per :meth:`lookup` whose rows become a frame of that schema.

    A subclass reads the table's full schema (:meth:`_table_schema`) and runs the query
    (:meth:`_select`) for the columns of :meth:`schema`.
    """

    def __init__(
        self,
        table: str,
        *,
        key: str,
        columns: Sequence[str] | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, not {batch_rows}")
        self.table = table
        self.key = key
        self.columns = None if columns is None else [c for c in columns if c != key]
        self.batch_rows = batch_rows
        self._readers: weakref.WeakSet[TablePartition] = weakref.WeakSet()

    # -- as a bounded source of one partition: every row, in key order --------------------

    def partition_count(self) -> int:
        return 1

    def open_partition(self, index: int) -> TablePartition:
        self._check_partition(index)
        return TablePartition(self, repr(self))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": None}  # open reads stay in their process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._readers = weakref.WeakSet()

    def adopt(self, partition: TablePartition) -> None:
        self._readers.add(partition)

    def _close_readers(self) -> None:
        """End every open pass (a stopped run's reader holds a snapshot and, in SQLite's
        rollback-journal mode, a lock)."""
        for reader in list(self._readers):
            reader.close()

    def scan_partition(self, index: int) -> pl.LazyFrame:
        self._check_partition(index)
        return scan(self, repr(self))

    @abstractmethod
    def close(self) -> None:
        """Release the connections the table holds open (idempotent)."""

    def _check_partition(self, index: int) -> None:
        if index != 0:
            raise IndexError(f"{self!r} has one partition (0), not {index}")

    @abstractmethod
    def open_rows(self, offset: int) -> tuple[pl.Schema, RowCursor]:
        """The :meth:`schema` and a cursor over the rows in key order after the first
        ``offset``; an error naming the table if it does not exist."""

    def schema(self) -> pl.Schema | None:
        """The key and the value columns, or ``None`` if the table does not exist yet."""
        full = self._table_schema()
        return None if full is None else self._restrict(full)

    def lookup(self, keys: pl.Series) -> pl.DataFrame:
        """The rows whose ``key`` is among ``keys``; keys not in the table are absent."""
        values: list[Any] = keys.drop_nulls().to_list()
        schema, rows = self._select(values)
        try:
            return pl.DataFrame(rows, schema=schema, orient="row", strict=False)
        except (pl.exceptions.ComputeError, TypeError, OverflowError) as exc:
            raise ValueError(
                f"{self!r}: rows looked up do not fit the schema {dict(schema)}: "
                f"{str(exc).splitlines()[0]}"
            ) from None

    def _restrict(self, full: pl.Schema) -> pl.Schema:
        """``full`` cut down to the key and :attr:`columns` (all columns if not given)."""
        wanted = list(full) if self.columns is None else [self.key, *self.columns]
        unknown = [c for c in wanted if c not in full]
        if unknown:
            raise ValueError(f"{self!r}: no column(s) {unknown}; the table has {list(full)}")
        return pl.Schema({c: full[c] for c in wanted})

    @abstractmethod
    def _table_schema(self) -> pl.Schema | None:
        """Every column of the table, or ``None`` if it does not exist."""

    @abstractmethod
    def _select(self, keys: list[Any]) -> tuple[pl.Schema, list[tuple[Any, ...]]]:
        """The :meth:`schema` and the rows whose key is in ``keys``, read in one query."""


def polars_type(declared: str) -> pl.DataType:
    """The Polars type of a column declared ``declared``, after SQLite's affinity rules:
    ``INT`` anywhere → Int64; ``CHAR``/``CLOB``/``TEXT`` or no type → String; ``BLOB`` →
    Binary; anything else (``REAL``, ``DOUBLE``, ``NUMERIC`` …) → Float64."""
    t = declared.upper()
    if "INT" in t:
        return pl.Int64()
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")) or not t:
        return pl.String()
    if "BLOB" in t:
        return pl.Binary()
    return pl.Float64()


class SQLiteTable(KeyedTable):
    """``table`` of the SQLite database at ``path``, looked up by its ``key`` column.

    :meth:`lookup` runs **one** query per call, whatever the number of keys:
    ``SELECT * FROM table WHERE key IN (SELECT value FROM json_each(?))`` with the keys as one
    JSON array (no limit on bound parameters). Each call opens a read-only connection, so the
    table may be written concurrently (WAL mode lets readers see the last committed state) and
    no connection outlives a call. Column types follow :func:`polars_type` of the declared
    types; if ``key`` is not unique in the table, the join uses the first row SQLite returns.
    ``columns`` limits the columns read (the key is always read); default: all of them.

    As a source (``p.source(SQLiteTable(...))``): one partition, every row in ``key`` order
    (ties by ``rowid``), one cursor of a read-only connection per pass, so the pass reads one
    committed state; see :mod:`strom.connectors.sql.table_source` for positions.

    Guarantee: reads only; each call (and each pass as a source) sees one committed state of
    the table.
    """

    def __init__(
        self,
        path: str | Path,
        table: str,
        *,
        key: str,
        columns: Sequence[str] | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        super().__init__(table, key=key, columns=columns, batch_rows=batch_rows)
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SQLiteTable({str(self.path)!r}, {self.table!r}, key={self.key!r})"

    def schema(self) -> pl.Schema | None:
        """The table's columns, or ``None`` if the database or table does not exist yet."""
        if not self.path.exists():
            return None
        return super().schema()

    def _table_schema(self) -> pl.Schema | None:
        with closing(self._connect()) as conn:
            return self._read_schema(conn)

    def _select(self, keys: list[Any]) -> tuple[pl.Schema, list[tuple[Any, ...]]]:
        with closing(self._connect()) as conn:
            schema = self._restrict(self._existing_schema(conn))
            items = ", ".join(_checked(c, schema[c]) for c in schema)
            sql = (
                f"SELECT {items} FROM {quote(self.table)} "
                f"WHERE {quote(self.key)} IN (SELECT value FROM json_each(?))"
            )
            return schema, conn.execute(sql, (json.dumps(keys),)).fetchall()

    def close(self) -> None:
        """End the open passes' reads (every lookup opens and closes its own connection)."""
        self._close_readers()

    def open_rows(self, offset: int) -> tuple[pl.Schema, RowCursor]:
        conn = self._connect()
        try:
            schema = self._restrict(self._existing_schema(conn))
            columns = ", ".join(_checked(c, schema[c]) for c in schema)
            base = f"SELECT {columns} FROM {quote(self.table)} ORDER BY {quote(self.key)}"
            order = f"{base}, rowid" if self._has_rowid(conn) else base
            cursor = conn.execute(f"{order} LIMIT -1 OFFSET ?", (offset,))
        except BaseException:
            conn.close()
            raise
        return schema, _SQLiteRows(conn, cursor)

    def _has_rowid(self, conn: sqlite3.Connection) -> bool:
        """Whether rows have a ``rowid`` to break key ties (views and WITHOUT ROWID tables
        have none: equal keys then come in SQLite's order, which a seek may not repeat)."""
        try:
            conn.execute(f"SELECT rowid FROM {quote(self.table)} LIMIT 0")
        except sqlite3.OperationalError as exc:
            if "rowid" in str(exc):
                return False
            raise
        return True

    def _existing_schema(self, conn: sqlite3.Connection) -> pl.Schema:
        full = self._read_schema(conn)
        if full is None:
            raise FileNotFoundError(f"{self!r}: no such table in {self.path}")
        return full

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():  # a read-only open would fail less clearly
            raise FileNotFoundError(f"{self!r}: no database at {self.path}")
        return sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)

    def _read_schema(self, conn: sqlite3.Connection) -> pl.Schema | None:
        info = conn.execute(f"PRAGMA table_info({quote(self.table)})").fetchall()
        if not info:
            return None
        return pl.Schema({row[1]: polars_type(row[2] or "") for row in info})


_STORED_AS: dict[pl.DataType, tuple[str, ...]] = {
    pl.Int64(): ("integer",),
    pl.Float64(): ("integer", "real"),
}
"""The storage classes SQLite may hand back for a column read as this type (besides null)."""


def _checked(column: str, dtype: pl.DataType) -> str:
    """The SELECT item for ``column``: SQLite's types are per value, so an INTEGER column may
    hold ``2.5`` or ``'x'``; such a value comes back as a text naming it, which the batch's
    construction rejects (a clear error) instead of truncating it or reading it as null."""
    allowed = _STORED_AS.get(dtype)
    if allowed is None:
        return quote(column)
    kinds = ", ".join(f"'{k}'" for k in (*allowed, "null"))
    q = quote(column)
    return (
        f"CASE WHEN typeof({q}) IN ({kinds}) THEN {q} ELSE 'not {dtype}: ' || quote({q}) END AS {q}"
    )


class _SQLiteRows:
    """A :class:`RowCursor` over one query of its own read-only connection."""

    def __init__(self, conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
        self._conn, self._cursor = conn, cursor

    def fetch(self, n: int) -> list[tuple[object, ...]]:
        return self._cursor.fetchmany(n)

    def close(self) -> None:
        self._cursor.close()
        self._conn.close()
