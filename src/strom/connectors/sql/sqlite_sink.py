"""SQL sinks: what every dialect shares (:class:`TableSink`, the statements), and SQLiteSink.

A table sink writes each batch in one transaction, creating its table from the first batch's
schema if it does not exist; ``mode="upsert"`` replaces the row of an existing key with
``INSERT ... ON CONFLICT (key) DO UPDATE``, which SQLite and PostgreSQL spell the same way.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import polars as pl

from strom.engine.contracts import AtLeastOnceSink

__all__ = [
    "Mode",
    "SQLiteSink",
    "TableSink",
    "create_table_sql",
    "insert_sql",
    "json_text",
    "quote",
    "sqlite_type",
]

Mode = Literal["insert", "upsert"]


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier (any character allowed)."""
    return '"' + name.replace('"', '""') + '"'


def json_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Column ``name`` (a Struct, List or Array) as JSON text; null stays null."""
    col = pl.col(name)
    if isinstance(dtype, pl.Struct):
        return col.struct.json_encode()
    text = pl.struct(col.alias("v")).struct.json_encode()
    inner = text.str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(col.is_null()).then(None).otherwise(inner).alias(name)


def create_table_sql(
    table: str, schema: pl.Schema, key: Sequence[str], column_type: Callable[[pl.DataType], str]
) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for ``schema``; ``key`` columns are ``NOT NULL`` and
    the ``PRIMARY KEY``. ``table`` is already quoted."""
    columns = [
        f"{quote(n)} {column_type(t)}" + (" NOT NULL" if n in key else "")
        for n, t in schema.items()
    ]
    if key:
        columns.append(f"PRIMARY KEY ({', '.join(quote(k) for k in key)})")
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"


def insert_sql(
    table: str, columns: Sequence[str], rows: str, *, mode: Mode, key: Sequence[str]
) -> str:
    """``INSERT INTO table (columns) <rows>``, plus the upsert's conflict clause: on a
    ``key`` conflict the other columns take the new row's values. ``table`` is quoted;
    ``rows`` is ``VALUES (...)`` or a ``SELECT``."""
    names = ", ".join(quote(c) for c in columns)
    sql = f"INSERT INTO {table} ({names}) {rows}"
    if mode == "upsert":
        conflict = ", ".join(quote(k) for k in key)
        updates = [f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in key]
        action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        sql += f" ON CONFLICT ({conflict}) {action}"
    return sql


class TableSink(AtLeastOnceSink, ABC):
    """What the SQL sinks share: argument checks, the table prepared at the first write
    (:meth:`_prepare`), the check that the table has every column of a batch, and
    :attr:`rows_written`. A subclass connects and writes one batch in one transaction, committed
    before ``write`` returns: so ``pre_commit`` has nothing left to do (at-least-once)."""

    def __init__(self, table: str, *, key: Sequence[str] | None, mode: Mode) -> None:
        if mode not in ("insert", "upsert"):
            raise ValueError(f"mode must be 'insert' or 'upsert', not {mode!r}")
        if mode == "upsert" and not key:
            raise ValueError("mode='upsert' needs key=[...] (the columns that identify a row)")
        self.table = table
        self.key = list(key or [])
        self.mode = mode
        self.rows_written = 0
        self._columns: list[str] | None = None  # the table's columns, read at the first write

    def open(self) -> None:
        self._columns = None
        self._connect()

    def write(self, batch: pl.DataFrame) -> None:
        if not self._is_open():
            raise RuntimeError(f"{type(self).__name__}.write() before open()")
        if batch.height == 0:
            return
        if self._columns is None:
            for k in self.key:
                if k not in batch.schema:
                    raise ValueError(
                        f"key column {k!r} is not among the columns {list(batch.schema)}"
                    )
            self._columns = self._prepare(batch.schema)
        missing = [c for c in batch.columns if c not in self._columns]
        if missing:
            raise ValueError(
                f"table {self.table!r} {self._where()} has no column(s) {missing}; "
                f"it has {self._columns}"
            )
        self._write(batch)
        self.rows_written += batch.height

    def close(self) -> None:
        self._disconnect()

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _is_open(self) -> bool: ...

    @abstractmethod
    def _where(self) -> str:
        """Where the table lives, for messages: ``in /path/db.sqlite``."""

    @abstractmethod
    def _prepare(self, schema: pl.Schema) -> list[str]:
        """Create the table if missing (and what upserts need); return its columns."""

    @abstractmethod
    def _write(self, batch: pl.DataFrame) -> None:
        """Write all of ``batch`` in one transaction, or nothing."""


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


def _to_sqlite(batch: pl.DataFrame) -> pl.DataFrame:
    """Columns converted to what ``sqlite3`` stores natively (see :func:`sqlite_type`)."""
    exprs = []
    for name, dtype in batch.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Duration):
            exprs.append(col.cast(pl.Int64))
        elif isinstance(dtype, pl.Struct | pl.List | pl.Array):
            exprs.append(json_text(name, dtype))
        elif (
            dtype.is_temporal() or dtype.is_decimal() or isinstance(dtype, pl.Categorical | pl.Enum)
        ):
            exprs.append(col.cast(pl.String))
        else:
            exprs.append(col)
    return batch.select(exprs)


class SQLiteSink(TableSink):
    """Writes every batch into ``table`` of the SQLite database at ``path``.

    The table is created from the first batch's schema if it does not exist (types by
    :func:`sqlite_type`; with ``key``, those columns are ``NOT NULL`` and the ``PRIMARY KEY``).
    An existing table must have every column of the batches. ``mode="insert"`` appends rows (a
    duplicate key fails the batch); ``mode="upsert"`` (needs ``key``) inserts or, on a key
    conflict, replaces the other columns: ``INSERT ... ON CONFLICT (key) DO UPDATE``. Window
    results written with ``key=[*keys, "window_start"]`` therefore keep each window's latest
    value: an ``is_update=True`` row replaces the earlier one.

    **Delivery guarantee: at-least-once.** Each batch is written in one transaction (all its
    rows or none) and committed before ``write`` returns (so ``pre_commit`` has nothing to
    wait for), so after a crash the table holds exactly the batches written before it; nothing
    else is resumed (the sink keeps no state of its own). The batches a replaying pipeline
    emits again are written again: in upsert mode they converge to the same rows (idempotent);
    in insert mode they are duplicates. Exactly-once (the checkpoint id committed in the same
    transaction) is not offered yet.
    """

    def __init__(
        self,
        path: str | Path,
        table: str,
        *,
        key: Sequence[str] | None = None,
        mode: Mode = "insert",
    ) -> None:
        super().__init__(table, key=key, mode=mode)
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._statements: dict[tuple[str, ...], str] = {}

    def _connect(self) -> None:
        self._conn = sqlite3.connect(self.path)
        self._conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        self._statements.clear()

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _is_open(self) -> bool:
        return self._conn is not None

    def _where(self) -> str:
        return f"in {self.path}"

    def _prepare(self, schema: pl.Schema) -> list[str]:
        conn = self._connection()
        table = quote(self.table)
        existing = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        if existing:
            if self.mode == "upsert":  # ON CONFLICT needs a unique index on the key
                index = quote(f"{self.table}__strom_key")
                keys = ", ".join(quote(k) for k in self.key)
                with conn:
                    conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} ({keys})")
            return existing
        with conn:
            conn.execute(create_table_sql(table, schema, self.key, sqlite_type))
        return list(schema)

    def _write(self, batch: pl.DataFrame) -> None:
        conn = self._connection()
        with conn:
            conn.executemany(self._statement(tuple(batch.columns)), _to_sqlite(batch).rows())

    def _connection(self) -> sqlite3.Connection:
        assert self._conn is not None, "checked by write()"
        return self._conn

    def _statement(self, columns: tuple[str, ...]) -> str:
        if columns not in self._statements:
            marks = ", ".join("?" for _ in columns)
            self._statements[columns] = insert_sql(
                quote(self.table), columns, f"VALUES ({marks})", mode=self.mode, key=self.key
            )
        return self._statements[columns]
