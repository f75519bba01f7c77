"""PostgresTable: a PostgreSQL table as a :class:`~strom.engine.contracts.LookupTable`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import polars as pl

from strom.connectors.sql.postgres import (
    INSTALL_HINT,
    PostgresConnectionError,
    connect,
    endpoint,
    polars_type,
    qualified,
    select_expression,
)
from strom.connectors.sql.sqlite_lookup import KeyedTable
from strom.connectors.sql.table_sink import quote
from strom.connectors.sql.table_source import BATCH_ROWS, RowCursor

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - strom.connectors.sql.postgres raised already
    raise ImportError(INSTALL_HINT, name=exc.name) from exc

__all__ = ["PostgresTable"]

T = TypeVar("T")
Connection = psycopg.Connection[tuple[object, ...]]

_COLUMNS_SQL = """
SELECT a.attname, b.typname, a.atttypmod, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


class PostgresTable(KeyedTable):
    """``table`` (may be ``schema.table``) of the PostgreSQL database at ``dsn``, looked up by
    its ``key`` column; ``columns`` limits the columns read (the key is always read).

    :meth:`lookup` runs **one** query per call, whatever the number of keys:
    ``SELECT ... FROM table WHERE key = ANY(%s)`` with the keys as one array parameter, cast to
    the key column's type. Column types follow
    :func:`~strom.connectors.sql.postgres.polars_type`; the table's columns and types are read
    once, at the first call that finds the table. If ``key`` is not unique in the table, the
    join uses the first row PostgreSQL returns.

    The table holds one autocommit connection, opened at the first call and opened again
    (once per call) if it was lost; a server that cannot be reached raises
    :class:`~strom.connectors.sql.postgres.PostgresConnectionError` naming host, port and
    database. :meth:`close` (or ``with``) ends the connection.

    As a source (``p.source(PostgresTable(...))``): one partition, every row in ``key`` order
    (ties by ``ctid``), each pass one ``REPEATABLE READ`` transaction on a connection of its
    own, streamed through a server-side cursor; see :mod:`strom.connectors.sql.table_source`
    for positions.

    Guarantee: reads only; each call (and each pass as a source) sees one committed state of
    the table.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        *,
        key: str,
        columns: Sequence[str] | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        super().__init__(table, key=key, columns=columns, batch_rows=batch_rows)
        self.dsn = dsn
        self._conn: Connection | None = None
        self._pid = 0  # the process that opened _conn
        self._full: pl.Schema | None = None
        self._reads: dict[str, str] = {}  # column → its SELECT item
        self._key_type = ""

    def __repr__(self) -> str:
        return f"PostgresTable({endpoint(self.dsn)!r}, {self.table!r}, key={self.key!r})"

    def __enter__(self) -> PostgresTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_conn": None}  # connections stay in their process

    def close(self) -> None:
        """Close the connection and end every open pass (a later call opens a new one)."""
        self._close_readers()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _table_schema(self) -> pl.Schema | None:
        if self._full is None:
            self._with_connection(self._read_schema)
        return self._full

    def _select(self, keys: list[Any]) -> tuple[pl.Schema, list[tuple[Any, ...]]]:
        def select(conn: Connection) -> tuple[pl.Schema, list[tuple[Any, ...]]]:
            if self._full is None:
                self._read_schema(conn)
                if self._full is None:
                    raise LookupError(f"{self!r}: no such table at {endpoint(self.dsn)}")
            schema = self._restrict(self._full)
            sql = (
                f"SELECT {', '.join(self._reads[c] for c in schema)} "
                f"FROM {qualified(self.table)} "
                f"WHERE {quote(self.key)} = ANY(%s::{self._key_type}[])"
            )
            return schema, conn.execute(sql, (keys,)).fetchall()

        return self._with_connection(select)

    def open_rows(self, offset: int) -> tuple[pl.Schema, RowCursor]:
        schema = self._existing_schema()
        columns = ", ".join(self._reads[c] for c in schema)
        base = f"SELECT {columns} FROM {qualified(self.table)} ORDER BY {quote(self.key)}"
        conn = connect(self.dsn, repr(self))
        try:
            conn.autocommit = False
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:  # ctid breaks ties; a view has none
                conn.execute(f"SELECT ctid FROM {qualified(self.table)} LIMIT 0")
                order = f"{base}, ctid"
            except psycopg.errors.UndefinedColumn:
                conn.rollback()
                order = base
            cursor = conn.cursor(name="strom_table_source")
            cursor.execute(f"{order} OFFSET %s", (offset,))
        except psycopg.OperationalError as exc:
            lost = conn.broken or conn.closed
            conn.close()
            if not lost:  # e.g. a statement timeout: the server's own message says it
                raise
            raise PostgresConnectionError(
                f"{self!r}: lost the connection to PostgreSQL at {endpoint(self.dsn)}: {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return schema, _PostgresRows(conn, cursor, repr(self))

    def _existing_schema(self) -> pl.Schema:
        full = self._table_schema()
        if full is None:
            raise LookupError(f"{self!r}: no such table at {endpoint(self.dsn)}")
        return self._restrict(full)

    def _read_schema(self, conn: Connection) -> None:
        rows = conn.execute(_COLUMNS_SQL, (qualified(self.table),)).fetchall()
        if not rows:
            return
        full: dict[str, pl.DataType] = {}
        for name, typname, typmod, declared in rows:
            assert isinstance(name, str) and isinstance(typname, str) and isinstance(typmod, int)
            full[name] = polars_type(typname, typmod)
            self._reads[name] = select_expression(name, typname, typmod)
            if name == self.key:
                self._key_type = str(declared)
        if self.key not in full:
            raise ValueError(f"{self!r}: no key column {self.key!r}; the table has {list(full)}")
        self._full = pl.Schema(full)

    def _with_connection(self, action: Callable[[Connection], T]) -> T:
        """``action`` on the connection, once more on a new one if the connection was lost."""
        if self._conn is not None and self._pid != os.getpid():
            self._conn = None  # inherited by fork: the parent's session, not ours to close
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = connect(self.dsn, repr(self))
                self._pid = os.getpid()
            try:
                return action(self._conn)
            except psycopg.OperationalError as exc:
                if not (self._conn.broken or self._conn.closed):
                    raise
                self.close()
                if attempt == 2:
                    raise PostgresConnectionError(
                        f"{self!r}: lost the connection to PostgreSQL at {endpoint(self.dsn)}: "
                        f"{exc}"
                    ) from exc
        raise AssertionError("unreachable")


class _PostgresRows:
    """A :class:`RowCursor` over a server-side cursor in its connection's own transaction."""

    def __init__(
        self, conn: Connection, cursor: psycopg.ServerCursor[tuple[object, ...]], owner: str
    ) -> None:
        self._conn, self._cursor, self._owner = conn, cursor, owner

    def fetch(self, n: int) -> list[tuple[object, ...]]:
        try:
            return self._cursor.fetchmany(n)
        except psycopg.OperationalError as exc:
            if not (self._conn.broken or self._conn.closed):
                raise
            raise PostgresConnectionError(
                f"{self._owner}: lost the connection while reading: {exc}"
            ) from exc

    def close(self) -> None:
        try:
            self._cursor.close()
            self._conn.rollback()  # read only: nothing to keep
        except psycopg.Error:
            pass  # a lost connection has nothing left to end
        finally:
            self._conn.close()
