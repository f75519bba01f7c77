"""PostgresSink: result batches as rows of a PostgreSQL table, by COPY, one transaction each."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import polars as pl

from strom.connectors.sql.postgres import (
    INSTALL_HINT,
    PostgresConnectionError,
    connect,
    copy_chunks,
    endpoint,
    postgres_type,
    qualified,
    to_copy_frame,
    writable,
)
from strom.connectors.sql.table_sink import (
    Mode,
    TableSink,
    create_table_sql,
    insert_sql,
    quote,
    refuse_null_keys,
)
from strom.connectors.sql.two_phase import (
    BATCH,
    EPOCH,
    STAGE_COLUMNS,
    WRITER,
    Ledger,
    stage_name,
)
from strom.connectors.sql.two_phase import Connection as LedgerConnection
from strom.engine.contracts import Guarantee

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - strom.connectors.sql.postgres raised already
    raise ImportError(INSTALL_HINT, name=exc.name) from exc

__all__ = ["PostgresSink"]

log = logging.getLogger("strom.connectors")

T = TypeVar("T")
Connection = psycopg.Connection[tuple[object, ...]]

#: The table's columns: name → (base type name, ``format_type`` text).
_COLUMNS_SQL = """
SELECT a.attname, b.typname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

#: Whether a unique, non-partial index covers exactly the given columns (ON CONFLICT's arbiter).
_UNIQUE_INDEX_SQL = """
SELECT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL
      AND i.indnkeyatts = cardinality(%s::text[])
      AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
           FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS k(attnum)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
          = (SELECT array_agg(x ORDER BY x) FROM unnest(%s::text[]) AS x)
)
"""

#: serialization_failure and deadlock_detected: the server rolled back a transaction that may
#: succeed when run again.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


class PostgresSink(TableSink):
    """Writes every batch into ``table`` of the PostgreSQL database at ``dsn`` (a libpq
    connection string or URI; ``table`` may be ``schema.table``).

    The table is created from the first batch's schema if it does not exist (types by
    :func:`~strom.connectors.sql.postgres.postgres_type`; with ``key``, those columns are
    ``NOT NULL`` and the ``PRIMARY KEY``); a column type PostgreSQL lacks fails before anything
    is written. An existing table must have every column of the batches, in types they can be
    written to (:func:`~strom.connectors.sql.postgres.writable`), else the batch fails before it is
    written. ``mode="insert"`` ``COPY``-s the rows straight into the table (a duplicate key
    fails the batch); ``mode="upsert"`` (needs ``key``) ``COPY``-s them into a temporary
    staging table and then runs ``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE``; for a
    key that occurs more than once in a batch the last row wins, as if written one by one. An
    existing table written in upsert mode gets a unique index on ``key`` unless it has one.
    Rows with a null in a ``key`` column fail the batch before it is written, as do strings
    holding NUL characters (PostgreSQL text cannot store them). NaN and ±infinity are
    stored as such; datetimes keep microseconds (PostgreSQL's precision), zoned ones in UTC.

    **Delivery guarantee: at-least-once** by default. Each batch is written in one transaction
    (all its rows or none) and committed before ``write`` returns. If the connection is lost,
    the sink reconnects and writes the whole batch again, up to ``retries`` times with a growing
    pause (from ``retry_backoff_s``); then ``write`` raises
    :class:`~strom.connectors.sql.postgres.PostgresConnectionError` (naming host, port and
    database) and the run fails with the batch unwritten (``pre_commit`` has nothing to wait
    for). A transaction the server rolls back (a deadlock or serialization failure with a
    concurrent writer) is retried the same way. A connection lost just as the server committed
    may leave the batch written twice: in upsert mode that converges to the same rows
    (idempotent); in insert mode they are duplicates, as are the batches a replaying pipeline
    emits again. Any other error (a constraint, a value out of range) rolls the batch back and
    propagates, noted with the table and server.

    **Exactly-once** with ``guarantee="exactly-once"``, in a run with checkpoints: each batch is
    ``COPY``-ed into a staging table ``_strom_stage_<sink_id>`` beside ``table`` (same schema,
    the target's column types; its rows tagged with the writer, epoch and batch number, so a
    retried batch is not staged twice), and ``commit(c)`` moves the rows of checkpoints ``<= c``
    into ``table`` (upserts: the last staged row of a key wins) and records ``c`` in
    ``_strom_sink_commits``, in one transaction (a replayed commit finds ``c`` recorded and does
    nothing); :mod:`~strom.connectors.sql.two_phase` says how. Every step is retried like a
    write. After a crash at any moment, ``recover(c)`` publishes what the dead process had
    pre-committed for checkpoints ``<= c`` and discards the rest, so with the sources replayed
    from ``c`` every row lands in ``table`` exactly once; readers of ``table`` never see a staged
    row, and a zombie process is fenced (:class:`~strom.engine.contracts.FencedError`).
    Every batch must have the same columns. A row the table refuses when published (a duplicate
    key in insert mode, a check constraint) fails ``commit`` and stays staged. ``sink_id``
    (default: the table name without its schema) keys the staged and ledger rows, which live in
    the table's schema: sinks of several pipelines writing one table need distinct ids.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        *,
        mode: Mode = "insert",
        key: Sequence[str] | None = None,
        retries: int = 3,
        retry_backoff_s: float = 0.5,
        guarantee: Guarantee = "at-least-once",
        sink_id: str | None = None,
    ) -> None:
        if sink_id is None:  # the ledger lives in the table's schema: the name is unique there
            sink_id = table.rpartition(".")[2]
        super().__init__(table, key=key, mode=mode, guarantee=guarantee, sink_id=sink_id)
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        self.dsn = dsn
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._conn: Connection | None = None
        self._opened = False
        self._types: dict[str, str] = {}  # column → base type name (pg_type.typname)
        self._checked: set[tuple[tuple[str, pl.DataType], ...]] = set()
        self._stages: dict[tuple[str, ...], str] = {}  # columns → staging table (per connection)

    def __repr__(self) -> str:
        return (
            f"PostgresSink({endpoint(self.dsn)!r}, {self.table!r}, mode={self.mode!r}, "
            f"guarantee={self.guarantee!r})"
        )

    def _connect(self) -> None:
        self._disconnect()
        self._conn = self._new_connection()
        self._opened = True
        self._checked.clear()

    def _disconnect(self) -> None:
        self._opened = False
        self._drop_connection()

    def _is_open(self) -> bool:
        return self._opened

    def _where(self) -> str:
        return f"at PostgreSQL {endpoint(self.dsn)}"

    def _prepare(self, schema: pl.Schema) -> list[str]:
        table = qualified(self.table)

        def prepare(conn: Connection) -> dict[str, str]:
            with conn.transaction():
                # sinks of several workers may prepare one table at once: CREATE ... IF NOT
                # EXISTS alone can still collide in the catalog
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (table,))
                types = self._read_columns(conn)
                if not types:
                    conn.execute(create_table_sql(table, schema, self.key, postgres_type))
                    types = self._read_columns(conn)
                elif self.mode == "upsert":
                    self._ensure_unique_key(conn)
            return types

        self._types = self._retrying(prepare)
        return list(self._types)

    def _write(self, batch: pl.DataFrame) -> None:
        self._check(batch)
        if self.mode == "upsert" and _has_duplicates(batch, self.key):
            batch = batch.unique(subset=self.key, keep="last", maintain_order=True)
        frame = to_copy_frame(batch)
        columns = tuple(batch.columns)

        def write(conn: Connection) -> None:
            stage = self._stage(conn, columns) if self.mode == "upsert" else None
            names = ", ".join(quote(c) for c in columns)
            target = stage or qualified(self.table)
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT csv)") as copy:
                    for chunk in copy_chunks(frame):
                        copy.write(chunk)
                if stage is not None:
                    rows = f"SELECT {names} FROM {stage}"
                    upsert = insert_sql(
                        qualified(self.table), columns, rows, mode="upsert", key=self.key
                    )
                    cur.execute(upsert)

        try:
            self._retrying(write)
        except psycopg.Error as exc:
            exc.add_note(
                f"{self!r} {self._where()}: the batch of {batch.height} row(s) was rolled back"
            )
            raise

    def _check(self, batch: pl.DataFrame) -> None:
        """Every column of ``batch`` fits its table column and can be sent, and no key is
        null: else raise."""
        signature = tuple(batch.schema.items())
        if signature not in self._checked:
            bad = [
                f"{name!r} is {self._types[name]} in the table but {dtype} in the batch"
                for name, dtype in batch.schema.items()
                if not writable(dtype, self._types[name])
            ]
            if bad:
                raise TypeError(
                    f"{self!r}: cannot write column(s) to table {self.table!r}: {'; '.join(bad)}"
                )
            self._checked.add(signature)
        if self.key:
            refuse_null_keys(self, batch)
        strings = [n for n, t in batch.schema.items() if isinstance(t, pl.String)]
        if strings:
            nul = batch.select(pl.col(strings).str.contains("\x00", literal=True).any())
            holding = [n for n in strings if nul.get_column(n).item()]
            if holding:
                raise ValueError(
                    f"{self!r}: column(s) {holding} hold NUL characters, which PostgreSQL text "
                    "cannot store (nothing of this batch was written)"
                )

    def _read_columns(self, conn: Connection) -> dict[str, str]:
        rows = conn.execute(_COLUMNS_SQL, (qualified(self.table),)).fetchall()
        return {str(name): str(typname) for name, typname, _ in rows}

    def _ensure_unique_key(self, conn: Connection) -> None:
        table = qualified(self.table)
        row = conn.execute(_UNIQUE_INDEX_SQL, (table, self.key, self.key)).fetchone()
        if row is None or not row[0]:
            index = quote(f"{self.table.rsplit('.', 1)[-1]}__strom_key")
            keys = ", ".join(quote(k) for k in self.key)
            conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} ({keys})")

    def _stage(self, conn: Connection, columns: tuple[str, ...]) -> str:
        """The temporary table that upserts of these columns are copied into first: the
        target's column types, no constraints, emptied at every commit. Created outside the
        batch transaction so that a failed batch does not roll its creation back."""
        if columns not in self._stages:
            stage = f"pg_temp.{quote(f'strom_stage_{len(self._stages)}')}"
            names = ", ".join(quote(c) for c in columns)
            conn.execute(
                f"CREATE TEMPORARY TABLE {stage} ON COMMIT DELETE ROWS AS "
                f"SELECT {names} FROM {qualified(self.table)} WITH NO DATA"
            )
            self._stages[columns] = stage
        return self._stages[columns]

    # -- exactly-once ----------------------------------------------------------------------

    def _ledger(self) -> Ledger:
        return _PostgresLedger(self)

    def _transaction(self, action: Callable[[LedgerConnection], T]) -> T:
        def run(conn: Connection) -> T:
            with conn.transaction():
                return action(conn)

        return self._retrying(run)

    def _create_stage(self, conn: LedgerConnection, columns: list[str]) -> None:
        stage = self._ledger().stage
        names = ", ".join(quote(c) for c in columns)
        own = f"NULL::text AS {WRITER}, NULL::bigint AS {EPOCH}, NULL::bigint AS {BATCH}"
        conn.execute(
            f"CREATE TABLE {stage} AS SELECT {own}, {names} FROM {qualified(self.table)} "
            "WITH NO DATA"
        )

    def _write_stage(self, batch: pl.DataFrame, epoch: int, number: int) -> None:
        self._check(batch)
        if self.mode == "upsert" and _has_duplicates(batch, self.key):
            # a key once per batch: then its last staged row is the one of the last batch
            batch = batch.unique(subset=self.key, keep="last", maintain_order=True)
        tag = [pl.lit(self.writer).alias(WRITER), pl.lit(epoch).alias(EPOCH),
               pl.lit(number).alias(BATCH)]  # fmt: skip
        frame = to_copy_frame(batch).select(*tag, pl.all())
        stage = self._ledger().stage
        names = ", ".join(quote(c) for c in frame.columns)
        staged = (
            f"SELECT EXISTS (SELECT 1 FROM {stage} "
            f"WHERE {WRITER} = %s AND {EPOCH} = %s AND {BATCH} = %s)"
        )
        attempts = 0

        def write(conn: Connection) -> None:
            nonlocal attempts
            attempts += 1
            with conn.transaction(), conn.cursor() as cur:
                if attempts > 1:  # the lost connection may have taken the answer to a commit
                    row = cur.execute(staged, (self.writer, epoch, number)).fetchone()
                    if row is not None and row[0]:
                        return
                with cur.copy(f"COPY {stage} ({names}) FROM STDIN (FORMAT csv)") as copy:
                    for chunk in copy_chunks(frame):
                        copy.write(chunk)

        try:
            self._retrying(write)
        except psycopg.Error as exc:
            exc.add_note(
                f"{self!r} {self._where()}: the batch of {batch.height} row(s) was not staged"
            )
            raise

    def _retrying(self, action: Callable[[Connection], T]) -> T:
        """``action`` on the connection, again up to :attr:`retries` more times if the
        connection is lost (or cannot be made; then on a new one) or the server rolled the
        transaction back (a deadlock or serialization failure). Other errors propagate."""
        attempt = 0
        while True:
            try:
                return action(self._connection())
            except (psycopg.OperationalError, PostgresConnectionError) as exc:
                conn = self._conn
                lost = conn is None or conn.broken or conn.closed
                if lost:
                    self._drop_connection()
                    reason = "connection to PostgreSQL lost"
                elif isinstance(exc, psycopg.Error) and exc.sqlstate in _RETRY_SQLSTATES:
                    reason = "transaction rolled back by the server"
                else:
                    raise  # the server refused the statement; the connection is fine
                if attempt >= self.retries:
                    if not lost:
                        raise
                    raise PostgresConnectionError(
                        f"{self!r}: lost the connection to PostgreSQL at {endpoint(self.dsn)} "
                        f"and could not write after {attempt + 1} attempt(s): {exc}"
                    ) from exc
                pause = self.retry_backoff_s * 2**attempt
                attempt += 1
                log.warning(
                    "%r: %s (%s); retrying in %.1f s (%d of %d)",
                    self,
                    reason,
                    str(exc).strip(),
                    pause,
                    attempt,
                    self.retries,
                )
                time.sleep(pause)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._new_connection()
        return self._conn

    def _new_connection(self) -> Connection:
        self._stages.clear()  # temporary tables die with their connection
        return connect(self.dsn, repr(self))

    def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


def _has_duplicates(batch: pl.DataFrame, key: list[str]) -> bool:
    """Whether a key occurs in more than one row (one column: a cheap distinct count)."""
    if len(key) == 1:
        return bool(batch.get_column(key[0]).n_unique() < batch.height)
    return bool(batch.select(pl.struct(key).is_duplicated().any()).item())


class _PostgresLedger(Ledger):
    def __init__(self, sink: PostgresSink) -> None:
        schema, _, _ = sink.table.rpartition(".")
        prefix = f"{quote(schema)}." if schema else ""
        super().__init__(
            sink.writer,
            prefix + quote(stage_name(sink.sink_id)),
            prefix=prefix,
            mark="%s",
            lock=" FOR UPDATE",
        )
        self.sink = sink

    def create_tables(self, conn: LedgerConnection) -> None:
        # sinks of several workers may create them at once: IF NOT EXISTS alone can collide
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.commits,))
        super().create_tables(conn)

    def stage_columns(self, conn: LedgerConnection) -> list[str] | None:
        rows = conn.execute(_COLUMNS_SQL, (self.stage,)).fetchall()
        names = [str(r[0]) for r in rows if r[0] not in STAGE_COLUMNS]
        return names or None

    def move(self, conn: LedgerConnection, columns: list[str], epoch: int, last_batch: int) -> None:
        sink = self.sink
        names = ", ".join(quote(c) for c in columns)
        where = f"WHERE {WRITER} = %s AND {EPOCH} = %s AND {BATCH} <= %s"
        if sink.mode == "upsert":  # one row per key, the last staged (ON CONFLICT needs it)
            keys = ", ".join(quote(k) for k in sink.key)
            rows = (
                f"SELECT DISTINCT ON ({keys}) {names} FROM {self.stage} {where} "
                f"ORDER BY {keys}, {BATCH} DESC"
            )
        else:  # a heap keeps no order: rows are published batch by batch, as staged
            rows = f"SELECT {names} FROM {self.stage} {where}"
        sql = insert_sql(qualified(sink.table), columns, rows, mode=sink.mode, key=sink.key)
        conn.execute(sql, (self.writer, epoch, last_batch))
