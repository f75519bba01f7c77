"""SQL tables as :class:`~strom.engine.contracts.LookupTable` for lookup joins: what every dialect
shares (:class:`KeyedTable`), and SQLiteTable."""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import polars as pl

from strom.connectors.sql.table_sink import quote

__all__ = ["KeyedTable", "SQLiteTable", "polars_type"]


class KeyedTable(ABC):
    """What the SQL lookup tables share: the ``key`` and ``columns`` to read, the schema they
    give, and one query per :meth:`lookup` whose rows become a frame of that schema.

    A subclass reads the table's full schema (:meth:`_table_schema`) and runs the query
    (:meth:`_select`) for the columns of :meth:`schema`.
    """

    def __init__(self, table: str, *, key: str, columns: Sequence[str] | None = None) -> None:
        self.table = table
        self.key = key
        self.columns = None if columns is None else [c for c in columns if c != key]

    def schema(self) -> pl.Schema | None:
        """The key and the value columns, or ``None`` if the table does not exist yet."""
        full = self._table_schema()
        return None if full is None else self._restrict(full)

    def lookup(self, keys: pl.Series) -> pl.DataFrame:
        """The rows whose ``key`` is among ``keys``; keys not in the table are absent."""
        values: list[Any] = keys.drop_nulls().to_list()
        schema, rows = self._select(values)
        return pl.DataFrame(rows, schema=schema, orient="row", strict=False)

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

    Guarantee: reads only; each call sees one committed state of the table.
    """

    def __init__(
        self, path: str | Path, table: str, *, key: str, columns: Sequence[str] | None = None
    ) -> None:
        super().__init__(table, key=key, columns=columns)
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
            full = self._read_schema(conn)
            if full is None:
                raise FileNotFoundError(f"{self!r}: no such table in {self.path}")
            schema = self._restrict(full)
            sql = (
                f"SELECT {', '.join(quote(c) for c in schema)} FROM {quote(self.table)} "
                f"WHERE {quote(self.key)} IN (SELECT value FROM json_each(?))"
            )
            return schema, conn.execute(sql, (json.dumps(keys),)).fetchall()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():  # a read-only open would fail less clearly
            raise FileNotFoundError(f"{self!r}: no database at {self.path}")
        return sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)

    def _read_schema(self, conn: sqlite3.Connection) -> pl.Schema | None:
        info = conn.execute(f"PRAGMA table_info({quote(self.table)})").fetchall()
        if not info:
            return None
        return pl.Schema({row[1]: polars_type(row[2] or "") for row in info})
