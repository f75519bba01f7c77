"""SQLiteSink: result batches as rows of a SQLite table (see :class:`SQLiteSink`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from strom.connectors.sql.table_sink import (
    Mode,
    T,
    TableSink,
    create_table_sql,
    insert_sql,
    json_text,
    quote,
    refuse_null_keys,
)
from strom.connectors.sql.two_phase import (
    BATCH,
    EPOCH,
    STAGE_COLUMNS,
    WRITER,
    Connection,
    Ledger,
    stage_name,
)
from strom.engine.contracts import Guarantee

__all__ = ["SQLiteSink", "sqlite_type"]


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

    **Delivery guarantee: at-least-once** by default. Each batch is written in one transaction
    (all its rows or none) and committed before ``write`` returns (so ``pre_commit`` has nothing
    to wait for), so after a crash the table holds exactly the batches written before it;
    nothing else is resumed. The batches a replaying pipeline emits again are written again: in
    upsert mode they converge to the same rows (idempotent); in insert mode they are duplicates.

    **Exactly-once** with ``guarantee="exactly-once"``, in a run with checkpoints: each batch is
    committed to a staging table ``_strom_stage_<sink_id>`` in the same database (its rows tagged
    with the writer), and ``commit(c)`` moves the rows of checkpoints ``<= c`` into ``table`` and
    records ``c`` in ``_strom_sink_commits``, in one transaction (a replayed commit finds ``c``
    recorded and does nothing); :mod:`~strom.connectors.sql.two_phase` says how. After a crash
    at any moment, ``recover(c)`` publishes what the dead process had pre-committed for
    checkpoints ``<= c`` and discards the rest, so with the sources replayed from ``c`` every
    row lands in ``table`` exactly once; readers of ``table`` never see a staged row, and a
    zombie process is fenced (:class:`~strom.engine.contracts.FencedError`). Every
    batch must have the same columns; a null key fails the batch before it is staged. A row the
    table refuses when published (a duplicate key in insert mode) fails ``commit`` and stays
    staged. ``sink_id`` (default: the table name) keys the staged and ledger rows: sinks of
    several pipelines writing one database need distinct ids.
    """

    def __init__(
        self,
        path: str | Path,
        table: str,
        *,
        key: Sequence[str] | None = None,
        mode: Mode = "insert",
        guarantee: Guarantee = "at-least-once",
        sink_id: str | None = None,
    ) -> None:
        super().__init__(table, key=key, mode=mode, guarantee=guarantee, sink_id=sink_id)
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._statements: dict[tuple[str, ...], str] = {}

    def __repr__(self) -> str:
        return f"SQLiteSink({str(self.path)!r}, {self.table!r}, guarantee={self.guarantee!r})"

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

    # -- exactly-once ----------------------------------------------------------------------

    def _ledger(self) -> Ledger:
        return _SQLiteLedger(self)

    def _transaction(self, action: Callable[[Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: no other writer in between
        try:
            result = action(conn)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        return result

    def _create_stage(self, conn: Connection, columns: list[str]) -> None:
        types = {
            row[1]: row[2]
            for row in conn.execute(f"PRAGMA table_info({quote(self.table)})").fetchall()
        }
        own = [f"{WRITER} TEXT NOT NULL", f"{EPOCH} INTEGER NOT NULL", f"{BATCH} INTEGER NOT NULL"]
        typed = [f"{quote(c)} {types.get(c, '')}".rstrip() for c in columns]
        stage = quote(stage_name(self.sink_id))
        conn.execute(f"CREATE TABLE {stage} ({', '.join(own + typed)})")

    def _write_stage(self, batch: pl.DataFrame, epoch: int, number: int) -> None:
        if self.key:
            refuse_null_keys(self, batch)
        columns = (*STAGE_COLUMNS, *batch.columns)
        names = ", ".join(quote(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {quote(stage_name(self.sink_id))} ({names}) VALUES ({marks})"
        tag = (self.writer, epoch, number)
        conn = self._connection()
        with conn:  # SQLite loses no answer: a failed insert was not committed
            conn.executemany(sql, (tag + row for row in _to_sqlite(batch).iter_rows()))


class _SQLiteLedger(Ledger):
    def __init__(self, sink: SQLiteSink) -> None:
        stage = quote(stage_name(sink.sink_id))
        super().__init__(sink.writer, stage, prefix="", mark="?", lock="")
        self.sink = sink

    def stage_columns(self, conn: Connection) -> list[str] | None:
        rows = conn.execute(f"PRAGMA table_info({self.stage})").fetchall()
        return [r[1] for r in rows if r[1] not in STAGE_COLUMNS] or None

    def move(self, conn: Connection, columns: list[str], epoch: int, last_batch: int) -> None:
        sink = self.sink
        names = ", ".join(quote(c) for c in columns)
        rows = (
            f"SELECT {names} FROM {self.stage} WHERE {WRITER} = ? AND {EPOCH} = ? "
            f"AND {BATCH} <= ? ORDER BY rowid"
        )
        sql = insert_sql(quote(sink.table), columns, rows, mode=sink.mode, key=sink.key)
        conn.execute(sql, (self.writer, epoch, last_batch))
