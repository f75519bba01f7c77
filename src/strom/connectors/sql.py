"""SQLiteSink: result batches as rows of a SQLite table, one transaction per batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import polars as pl

__all__ = ["SQLiteSink", "sqlite_type"]

Mode = Literal["insert", "upsert"]


def sqlite_type(dtype: pl.DataType) -> str:
    """The column type a new table gets for a Polars type.

    Integers and Booleans are INTEGER, floats REAL, Binary BLOB; strings, dates, times, decimals
    and nested values (as JSON) TEXT; Durations INTEGER in their time unit.
    """
    if dtype.is_integer() or dtype == pl.Boolean or isinstance(dtype, pl.Duration):
        return "INTEGER"
    if dtype.is_float():
        return "REAL"
    if dtype == pl.Binary:
        return "BLOB"
    return "TEXT"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _to_sqlite(batch: pl.DataFrame) -> pl.DataFrame:
    """Columns converted to what ``sqlite3`` stores natively (see :func:`sqlite_type`)."""
    exprs = []
    for name, dtype in batch.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Duration):
            exprs.append(col.cast(pl.Int64))
        elif isinstance(dtype, pl.Struct):
            exprs.append(col.struct.json_encode())
        elif isinstance(dtype, pl.List | pl.Array):
            text = pl.struct(col.alias("v")).struct.json_encode()
            inner = text.str.strip_prefix('{"v":').str.strip_suffix("}")
            exprs.append(pl.when(col.is_null()).then(None).otherwise(inner).alias(name))
        elif (
            dtype.is_temporal() or dtype.is_decimal() or isinstance(dtype, pl.Categorical | pl.Enum)
        ):
            exprs.append(col.cast(pl.String))
        else:
            exprs.append(col)
    return batch.select(exprs)


class SQLiteSink:
    """Writes every batch into ``table`` of the SQLite database at ``path``.

    The table is created from the first batch's schema if it does not exist (types by
    :func:`sqlite_type`; with ``key``, those columns are ``NOT NULL`` and the ``PRIMARY KEY``).
    An existing table must have every column of the batches. ``mode="insert"`` appends rows (a
    duplicate key fails the batch); ``mode="upsert"`` (needs ``key``) inserts or, on a key
    conflict, replaces the other columns: ``INSERT ... ON CONFLICT (key) DO UPDATE``. Window
    results written with ``key=[*keys, "window_start"]`` therefore keep each window's latest
    value: an ``is_update=True`` row replaces the earlier one.

    **Delivery guarantee: at-least-once.** Each batch is written in one transaction (all its
    rows or none) and committed before ``write`` returns, so after a crash the table holds
    exactly the batches written before it; nothing else is resumed (the sink keeps no state of
    its own). The batches a replaying pipeline emits again are written again: in upsert mode
    they converge to the same rows (idempotent); in insert mode they are duplicates.
    Exactly-once (the checkpoint id committed in the same transaction) arrives with checkpoints.
    """

    def __init__(
        self,
        path: str | Path,
        table: str,
        *,
        key: Sequence[str] | None = None,
        mode: Mode = "insert",
    ) -> None:
        if mode not in ("insert", "upsert"):
            raise ValueError(f"mode must be 'insert' or 'upsert', not {mode!r}")
        if mode == "upsert" and not key:
            raise ValueError("mode='upsert' needs key=[...] (the columns that identify a row)")
        self.path = Path(path)
        self.table = table
        self.key = list(key or [])
        self.mode = mode
        self.rows_written = 0
        self._conn: sqlite3.Connection | None = None
        self._columns: list[str] | None = None  # the table's columns, read at the first write
        self._statements: dict[tuple[str, ...], str] = {}

    def open(self) -> None:
        self._conn = sqlite3.connect(self.path)
        self._conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        self._columns = None
        self._statements.clear()

    def write(self, batch: pl.DataFrame) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("SQLiteSink.write() before open()")
        if batch.height == 0:
            return
        if self._columns is None:
            self._columns = self._prepare(conn, batch.schema)
        missing = [c for c in batch.columns if c not in self._columns]
        if missing:
            raise ValueError(
                f"table {self.table!r} in {self.path} has no column(s) {missing}; "
                f"it has {self._columns}"
            )
        statement = self._statement(tuple(batch.columns))
        rows = _to_sqlite(batch).rows()
        with conn:
            conn.executemany(statement, rows)
        self.rows_written += len(rows)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _prepare(self, conn: sqlite3.Connection, schema: pl.Schema) -> list[str]:
        """Create the table if missing; return its columns."""
        for k in self.key:
            if k not in schema:
                raise ValueError(f"key column {k!r} is not among the columns {list(schema)}")
        table = _quote(self.table)
        existing = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        if existing:
            if self.mode == "upsert":  # ON CONFLICT needs a unique index on the key
                index = _quote(f"{self.table}__strom_key")
                keys = ", ".join(_quote(k) for k in self.key)
                with conn:
                    conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} ({keys})")
            return existing
        columns = [
            f"{_quote(n)} {sqlite_type(t)}" + (" NOT NULL" if n in self.key else "")
            for n, t in schema.items()
        ]
        if self.key:
            columns.append(f"PRIMARY KEY ({', '.join(_quote(k) for k in self.key)})")
        with conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})")
        return list(schema)

    def _statement(self, columns: tuple[str, ...]) -> str:
        if columns not in self._statements:
            names = ", ".join(_quote(c) for c in columns)
            marks = ", ".join("?" for _ in columns)
            sql = f"INSERT INTO {_quote(self.table)} ({names}) VALUES ({marks})"
            if self.mode == "upsert":
                conflict = ", ".join(_quote(k) for k in self.key)
                updates = [
                    f"{_quote(c)} = excluded.{_quote(c)}" for c in columns if c not in self.key
                ]
                action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
                sql += f" ON CONFLICT ({conflict}) {action}"
            self._statements[columns] = sql
        return self._statements[columns]
