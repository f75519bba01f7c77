"""SQLiteTable: a SQLite table as a :class:`~strom.pipeline.io.LookupTable` for lookup joins."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["SQLiteTable", "polars_type"]


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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteTable:
    """``table`` of the SQLite database at ``path``, looked up by its ``key`` column.

    :meth:`lookup` runs **one** query per call, whatever the number of keys:
    ``SELECT * FROM table WHERE key IN (SELECT value FROM json_each(?))`` with the keys as one
    JSON array (no limit on bound parameters). Each call opens a read-only connection, so the
    table may be written concurrently (WAL mode lets readers see the last committed state) and
    no connection outlives a call. Column types follow :func:`polars_type` of the declared
    types; if ``key`` is not unique in the table, the join uses the first row SQLite returns.

    Guarantee: reads only; each call sees one committed state of the table.
    """

    def __init__(self, path: str | Path, table: str, *, key: str) -> None:
        self.path = Path(path)
        self.table = table
        self.key = key

    def __repr__(self) -> str:
        return f"SQLiteTable({str(self.path)!r}, {self.table!r}, key={self.key!r})"

    def schema(self) -> pl.Schema | None:
        """The table's columns, or ``None`` if the database or table does not exist yet."""
        if not self.path.exists():
            return None
        with closing(self._connect()) as conn:
            return self._schema(conn)

    def lookup(self, keys: pl.Series) -> pl.DataFrame:
        """The rows whose ``key`` is among ``keys``; keys not in the table are absent."""
        values: list[Any] = keys.drop_nulls().to_list()
        with closing(self._connect()) as conn:
            schema = self._schema(conn)
            if schema is None:
                raise FileNotFoundError(f"{self!r}: no such table in {self.path}")
            sql = (
                f"SELECT {', '.join(_quote(c) for c in schema)} FROM {_quote(self.table)} "
                f"WHERE {_quote(self.key)} IN (SELECT value FROM json_each(?))"
            )
            rows = conn.execute(sql, (json.dumps(values),)).fetchall()
        return pl.DataFrame(rows, schema=schema, orient="row", strict=False)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():  # a read-only open would fail less clearly
            raise FileNotFoundError(f"{self!r}: no database at {self.path}")
        return sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)

    def _schema(self, conn: sqlite3.Connection) -> pl.Schema | None:
        info = conn.execute(f"PRAGMA table_info({_quote(self.table)})").fetchall()
        if not info:
            return None
        return pl.Schema({row[1]: polars_type(row[2] or "") for row in info})
