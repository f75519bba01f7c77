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
from typing import Literal, TypeVar

import polars as pl

from strom.connectors.sql.two_phase import (
    BATCH,
    EPOCH,
    STAGE_COLUMNS,
    WRITER,
    Connection,
    Ledger,
    stage_name,
)
from strom.engine.contracts import AtLeastOnceSink, Guarantee

__all__ = [
    "Mode",
    "SQLiteSink",
    "TableSink",
    "create_table_sql",
    "insert_sql",
    "json_text",
    "quote",
    "refuse_null_keys",
    "sqlite_type",
]

Mode = Literal["insert", "upsert"]
T = TypeVar("T")


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
    :attr:`rows_written`; and the two modes of delivery.

    **At-least-once** (the default): a subclass writes each batch in one transaction, committed
    before ``write`` returns, so ``pre_commit`` has nothing left to do. **Exactly-once**
    (``guarantee="exactly-once"``): batches are staged and published by checkpoints through a
    :class:`~strom.connectors.sql.two_phase.Ledger` (its module says how); the sink then needs
    a run with checkpoints, which calls :meth:`recover` right after :meth:`open`, and refuses
    to write before it."""

    def __init__(
        self,
        table: str,
        *,
        key: Sequence[str] | None,
        mode: Mode,
        guarantee: Guarantee = "at-least-once",
        sink_id: str | None = None,
    ) -> None:
        if mode not in ("insert", "upsert"):
            raise ValueError(f"mode must be 'insert' or 'upsert', not {mode!r}")
        if mode == "upsert" and not key:
            raise ValueError("mode='upsert' needs key=[...] (the columns that identify a row)")
        if guarantee not in ("at-least-once", "exactly-once"):
            raise ValueError(
                f"guarantee must be 'at-least-once' or 'exactly-once', not {guarantee!r}"
            )
        if sink_id is not None and not sink_id:
            raise ValueError("sink_id must not be empty")
        self.table = table
        self.key = list(key or [])
        self.mode = mode
        self.guarantee = guarantee
        self.sink_id = sink_id or table
        self.worker: int | None = None
        self.rows_written = 0
        self._columns: list[str] | None = None  # the table's columns, read at the first write
        self._epoch: int | None = None  # exactly-once: this process's epoch, set by recover()
        self._batches = 0  # exactly-once: batches staged in this epoch
        self._staged: list[str] | None = None  # exactly-once: the staging table's columns

    @property
    def writer(self) -> str:
        """What the staged rows and the ledger rows of this sink (and worker) are keyed by."""
        return self.sink_id if self.worker is None else f"{self.sink_id}#w{self.worker}"

    def set_worker(self, index: int) -> None:
        """Key this sink's staged rows by worker ``index`` too (several workers share a table)."""
        self.worker = index

    def open(self) -> None:
        self._columns = None
        self._staged = None
        self._epoch = None
        self._connect()

    def write(self, batch: pl.DataFrame) -> None:
        if not self._is_open():
            raise RuntimeError(f"{type(self).__name__}.write() before open()")
        if self.guarantee == "exactly-once" and self._epoch is None:
            raise RuntimeError(
                f"{self!r} is exactly-once: it publishes rows at checkpoints only, so it needs a "
                "run with checkpoints (strom run --checkpoint-dir), which calls recover() "
                "before the first write"
            )
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
        if self._epoch is None:
            self._write(batch)
        else:
            self._stage_batch(batch, self._epoch)
        self.rows_written += batch.height

    def pre_commit(self, checkpoint_id: int) -> None:
        """At-least-once: nothing to do (each write is committed). Exactly-once: record that
        ``checkpoint_id`` covers every batch staged so far (they are durable already)."""
        if self.guarantee == "exactly-once":
            epoch, last = self._recovered("pre_commit"), self._batches - 1
            self._transaction(lambda c: self._ledger().pre_commit(c, epoch, checkpoint_id, last))

    def commit(self, checkpoint_id: int) -> None:
        """Exactly-once: publish the batches of every pre-commit ``<= checkpoint_id`` and
        record it, in one transaction; nothing when it is recorded already."""
        if self.guarantee == "exactly-once":
            epoch = self._recovered("commit")
            self._transaction(lambda c: self._ledger().commit(c, epoch, checkpoint_id))

    def abort(self, checkpoint_id: int) -> None:
        """Exactly-once: discard the batches staged since the last pre-commit before
        ``checkpoint_id``."""
        if self.guarantee == "exactly-once":
            epoch = self._recovered("abort")
            self._transaction(lambda c: self._ledger().abort(c, epoch, checkpoint_id))

    def recover(self, checkpoint_id: int | None) -> None:
        """Exactly-once: publish what an earlier process pre-committed for checkpoints
        ``<= checkpoint_id``, discard the rest it staged, and fence it (a new epoch)."""
        if self.guarantee != "exactly-once":
            return
        if not self._is_open():
            raise RuntimeError(f"{type(self).__name__}.recover() before open()")

        def recover(conn: Connection) -> int:
            ledger = self._ledger()
            ledger.create_tables(conn)
            return ledger.recover(conn, checkpoint_id)

        self._epoch = self._transaction(recover)
        self._batches = 0

    def close(self) -> None:
        """Disconnect. Exactly-once: staged rows stay staged (the next run's recover decides)."""
        self._epoch = None
        self._disconnect()

    def _recovered(self, what: str) -> int:
        if self._epoch is None:
            raise RuntimeError(f"{type(self).__name__}.{what}() before recover()")
        return self._epoch

    def _stage_batch(self, batch: pl.DataFrame, epoch: int) -> None:
        """Append ``batch`` to the staging table (created at the first batch, with its columns:
        every later batch must have the same ones) as batch number :attr:`_batches`."""
        columns = list(batch.columns)
        if self._staged is None:
            self._staged = self._transaction(lambda conn: self._ensure_stage(conn, columns))
        if set(columns) != set(self._staged):
            raise ValueError(
                f"{self!r}: an exactly-once sink writes one set of columns, {self._staged}; "
                f"this batch has {columns} (nothing of it was staged)"
            )
        self._write_stage(batch.select(self._staged), epoch, self._batches)
        self._batches += 1

    def _ensure_stage(self, conn: Connection, columns: list[str]) -> list[str]:
        """The staging table's columns: ``columns``, creating the table; an existing one with
        other columns is replaced if empty, else refused (an earlier run staged rows there)."""
        ledger = self._ledger()
        existing = ledger.stage_columns(conn)
        if existing is not None and set(existing) == set(columns):
            return existing
        if existing is not None:
            if conn.execute(f"SELECT 1 FROM {ledger.stage} LIMIT 1").fetchone() is not None:
                raise ValueError(
                    f"{self!r}: staging table {ledger.stage} holds rows of columns {existing} "
                    f"staged by an earlier run; this run writes {columns}. Recover that run's "
                    "checkpoint first, or use another sink_id"
                )
            conn.execute(f"DROP TABLE {ledger.stage}")
        self._create_stage(conn, columns)
        return columns

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

    @abstractmethod
    def _ledger(self) -> Ledger:
        """The two-phase statements of this sink's writer."""

    @abstractmethod
    def _transaction(self, action: Callable[[Connection], T]) -> T:
        """``action`` in one transaction (committed, or rolled back if it raises)."""

    @abstractmethod
    def _create_stage(self, conn: Connection, columns: list[str]) -> None:
        """Create the staging table: :data:`STAGE_COLUMNS`, then ``columns`` typed as the
        target's."""

    @abstractmethod
    def _write_stage(self, batch: pl.DataFrame, epoch: int, number: int) -> None:
        """Append all of ``batch`` (the staging table's columns) to the staging table as batch
        ``number`` of ``epoch``, in one transaction, or nothing; exactly once even if retried."""


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


def refuse_null_keys(sink: TableSink, batch: pl.DataFrame) -> None:
    """Raise if a row has a null in a key column (the table would refuse it when published)."""
    nulls = batch.select(pl.any_horizontal(pl.col(sink.key).is_null()).sum()).item()
    if nulls:
        raise ValueError(
            f"{sink!r}: {nulls} row(s) have a null in key column(s) {sink.key}; a row needs "
            "its key (nothing of this batch was written)"
        )


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
