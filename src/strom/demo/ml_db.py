"""Where the ML demo's tables go: a SQLite file (the default) or a PostgreSQL database.

The pipeline writes through strom's sinks (:class:`~strom.SQLiteSink` or
:class:`~strom.PostgresSink`, the same modes and keys); the demo reads back and runs its SQL
join through the database's own driver, as any other program would.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from strom import SQLiteSink
from strom.demo.check import read_table
from strom.engine.contracts import Sink


@dataclass(frozen=True)
class Database:
    """SQLite at ``path``, or PostgreSQL at ``postgres`` (a libpq DSN) when it is given."""

    path: Path
    postgres: str | None = None

    def __str__(self) -> str:
        return f"SQLite {self.path}" if self.postgres is None else "PostgreSQL"

    def sink(self, table: str, *, key: list[str] | None = None) -> Sink:
        """A sink appending to ``table`` (upserting by ``key`` when given)."""
        mode: Literal["insert", "upsert"] = "upsert" if key else "insert"
        if self.postgres is None:
            return SQLiteSink(self.path, table, key=key, mode=mode)
        from strom.connectors import PostgresSink

        return PostgresSink(self.postgres, table, key=key, mode=mode)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of one statement (no parameters: the demo's SQL is its own)."""
        if self.postgres is None:
            with closing(sqlite3.connect(self.path)) as lite, lite:
                return lite.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(self.postgres, autocommit=True) as conn:
            cursor = conn.execute(sql.encode())  # bytes: psycopg's type for a query built here
            return cursor.fetchall() if cursor.description else []

    def read(self, table: str) -> pl.DataFrame | None:
        """Every row of ``table`` in insertion order (``None``: the table was never created)."""
        if self.postgres is None:
            return read_table(self.path, table)
        import psycopg

        with psycopg.connect(self.postgres) as conn:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                return None
            # ctid: the physical order, which is the insertion order of an append-only table
            cursor = conn.execute(f'SELECT * FROM "{table}" ORDER BY ctid'.encode())
            names = [d.name for d in cursor.description or []]
            rows = cursor.fetchall()
        return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)

    def write_devices(self, devices: pl.DataFrame) -> None:
        """The ``devices`` table (device, site, model) the predictions are joined with."""
        self.query("CREATE TABLE devices (device TEXT PRIMARY KEY, site TEXT, model TEXT)")
        values = ", ".join(f"('{d}', '{s}', '{m}')" for d, s, m in devices.rows())
        self.query(f"INSERT INTO devices VALUES {values}")
