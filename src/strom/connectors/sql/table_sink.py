"""What the SQL sinks share: :class:`TableSink` (argument checks, the table prepared at the first
write, the two delivery modes) and the statements SQLite and PostgreSQL spell the same way.

A table sink writes each batch in one transaction, creating its table from the first batch's
schema if it does not exist; ``mode="upsert"`` replaces the row of an existing key with
``INSERT ... ON CONFLICT (key) DO UPDATE``. With ``guarantee="exactly-once"`` it stages
batches and publishes them at checkpoints (:mod:`strom.connectors.sql.two_phase`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import polars as pl

from strom.connectors.sql.two_phase import Connection, Ledger
from strom.engine.contracts import AtLeastOnceSink, Guarantee

__all__ = [
    "Mode",
    "TableSink",
    "create_table_sql",
    "insert_sql",
    "json_text",
    "quote",
    "refuse_null_keys",
]

log = logging.getLogger("strom.connectors")

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
        self._covered = -1  # exactly-once: the last batch a pre-commit (or an abort) covers
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
            self._covered = last

    def commit(self, checkpoint_id: int) -> None:
        """Exactly-once: publish the batches of every pre-commit ``<= checkpoint_id`` and
        record it, in one transaction; nothing when it is recorded already."""
        if self.guarantee == "exactly-once":
            epoch = self._recovered("commit")
            self._transaction(lambda c: self._ledger().commit(c, epoch, checkpoint_id))

    def abort(self, checkpoint_id: int) -> None:
        """Exactly-once: discard the batches staged since the last pre-commit before
        ``checkpoint_id``; the sources must then replay from the last completed checkpoint.
        (A run that goes on without replaying must not abort: the next pre-commit covers
        these batches too.)"""
        if self.guarantee == "exactly-once":
            epoch = self._recovered("abort")
            self._transaction(lambda c: self._ledger().abort(c, epoch, checkpoint_id))
            self._covered = self._batches - 1

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
        self._batches, self._covered = 0, -1

    def close(self) -> None:
        """Disconnect. Exactly-once: staged rows stay staged (the next run's recover decides);
        batches no pre-commit covers are logged, as the next recovery discards them."""
        if self._epoch is not None and self._batches - 1 > self._covered:
            log.warning(
                "%r closed with %d batch(es) staged after its last pre-commit: they are not "
                "published, and the next recovery discards them (a run ends with a checkpoint)",
                self,
                self._batches - 1 - self._covered,
            )
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


def refuse_null_keys(sink: TableSink, batch: pl.DataFrame) -> None:
    """Raise if a row has a null in a key column (the table would refuse it when published)."""
    nulls = batch.select(pl.any_horizontal(pl.col(sink.key).is_null()).sum()).item()
    if nulls:
        raise ValueError(
            f"{sink!r}: {nulls} row(s) have a null in key column(s) {sink.key}; a row needs "
            "its key (nothing of this batch was written)"
        )
