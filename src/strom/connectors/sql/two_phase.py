"""The exactly-once bookkeeping of the SQL sinks: staged rows, pre-commits and commits in tables.

An exactly-once table sink never writes its target table from :meth:`write`: it appends each
batch (one transaction) to a **staging table** beside the target, tagged with its writer, the
writer's epoch and a batch number. Two small tables of the same database hold the rest:

- ``_strom_sink_commits(sink_id, epoch, checkpoint_id)``: per writer, the epoch of the process
  that may write (bumped by every :meth:`Ledger.recover`: a zombie of an earlier process is
  fenced at its next pre-commit or commit) and the last checkpoint published;
- ``_strom_sink_precommits(sink_id, epoch, checkpoint_id, last_batch)``: checkpoint ``c`` covers
  the epoch's staged batches numbered ``<= last_batch``.

``pre_commit(c)`` only inserts its row (the batches are durable already); ``commit(c)`` moves the
staged batches of every pre-commit ``<= c`` into the target (insert or upsert), deletes them and
records ``c``, in **one** transaction, and does nothing when ``c`` is recorded already (a replay).
So the target holds exactly the batches of published checkpoints, whatever moment a process
dies at, and readers of the target never see a staged row.

Why a staging table, not PostgreSQL's ``PREPARE TRANSACTION``: that needs
``max_prepared_transactions > 0`` (0 by default), holds the target's locks for the whole
checkpoint interval, and SQLite has no equivalent; one design serves both databases.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from strom.engine.contracts import FencedError

__all__ = [
    "BATCH",
    "COMMITS",
    "EPOCH",
    "PRECOMMITS",
    "STAGE_COLUMNS",
    "WRITER",
    "Connection",
    "Ledger",
    "stage_name",
]

log = logging.getLogger("strom.connectors")

COMMITS = "_strom_sink_commits"
PRECOMMITS = "_strom_sink_precommits"

#: The staging table's own columns, before the sink's: writer, its epoch, the batch number.
WRITER, EPOCH, BATCH = "_strom_sink", "_strom_epoch", "_strom_batch"
STAGE_COLUMNS = (WRITER, EPOCH, BATCH)


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the ledger needs of a DB-API connection (``sqlite3`` and ``psycopg`` both)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> _Cursor: ...


def stage_name(sink_id: str) -> str:
    """The (unquoted) staging table of ``sink_id``: readable, and under PostgreSQL's 63 bytes."""
    name = f"_strom_stage_{sink_id}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(sink_id.encode()).hexdigest()[:12]
    return f"_strom_stage_{sink_id.encode()[:36].decode(errors='ignore')}_{digest}"


class Ledger(ABC):
    """The statements of one writer's two phases, run by the sink inside one transaction each
    (every method takes the connection in that transaction). ``prefix`` is the quoted schema
    and dot the ledger tables go in (``""``: the connection's default); ``mark`` the driver's
    parameter marker; ``lock`` what makes a ``SELECT`` lock the writer's row (PostgreSQL's
    ``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already serialises writers)."""

    def __init__(self, writer: str, stage: str, *, prefix: str, mark: str, lock: str) -> None:
        self.writer = writer
        self.stage = stage  # quoted, qualified like the target
        self.commits = f"{prefix}{COMMITS}"
        self.precommits = f"{prefix}{PRECOMMITS}"
        self.mark = mark
        self.lock = lock

    @abstractmethod
    def stage_columns(self, conn: Connection) -> list[str] | None:
        """The sink's columns of the staging table, None if it does not exist."""

    @abstractmethod
    def move(self, conn: Connection, columns: list[str], epoch: int, last_batch: int) -> None:
        """Insert (or upsert) the writer's staged rows of ``epoch`` numbered ``<= last_batch``
        into the target, in the order they were staged."""

    def create_tables(self, conn: Connection) -> None:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.commits} (sink_id TEXT PRIMARY KEY, "
            "epoch BIGINT NOT NULL, checkpoint_id BIGINT)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.precommits} (sink_id TEXT NOT NULL, "
            "epoch BIGINT NOT NULL, checkpoint_id BIGINT NOT NULL, last_batch BIGINT NOT NULL, "
            "PRIMARY KEY (sink_id, checkpoint_id))"
        )

    def recover(self, conn: Connection, checkpoint_id: int | None) -> int:
        """Publish what the previous epoch pre-committed for checkpoints ``<= checkpoint_id``,
        discard everything else the writer staged (any epoch), start a new epoch: returned."""
        m = self.mark
        row = conn.execute(
            f"SELECT epoch, checkpoint_id FROM {self.commits} WHERE sink_id = {m}{self.lock}",
            (self.writer,),
        ).fetchone()
        if row is None:
            conn.execute(
                f"INSERT INTO {self.commits} (sink_id, epoch, checkpoint_id) VALUES ({m}, 0, NULL)",
                (self.writer,),
            )
            epoch, committed = 0, None
        else:
            epoch, committed = int(row[0]), None if row[1] is None else int(row[1])
        columns = self.stage_columns(conn)
        if checkpoint_id is not None and (committed is None or committed < checkpoint_id):
            last = self._last_batch(conn, epoch, checkpoint_id)
            if last is not None and columns is not None:
                self.move(conn, columns, epoch, last)
        elif checkpoint_id is not None and committed is not None and committed > checkpoint_id:
            log.warning(
                "sink %r had published checkpoint %d, and the run restores the earlier %d: "
                "rows of the checkpoints in between are in the table and will be written again",
                self.writer,
                committed,
                checkpoint_id,
            )
        if columns is not None:
            conn.execute(f"DELETE FROM {self.stage} WHERE {WRITER} = {m}", (self.writer,))
        conn.execute(f"DELETE FROM {self.precommits} WHERE sink_id = {m}", (self.writer,))
        conn.execute(
            f"UPDATE {self.commits} SET epoch = {m}, checkpoint_id = {m} WHERE sink_id = {m}",
            (epoch + 1, checkpoint_id, self.writer),
        )
        return epoch + 1

    def pre_commit(self, conn: Connection, epoch: int, checkpoint_id: int, last_batch: int) -> None:
        """Record that ``checkpoint_id`` covers the epoch's batches ``<= last_batch``."""
        m = self.mark
        committed = self.fence(conn, epoch)
        if committed is not None and checkpoint_id <= committed:
            raise ValueError(
                f"sink {self.writer!r}: pre_commit({checkpoint_id}) after checkpoint "
                f"{committed} was published (checkpoint ids must increase)"
            )
        conn.execute(
            f"DELETE FROM {self.precommits} WHERE sink_id = {m} AND checkpoint_id = {m}",
            (self.writer, checkpoint_id),
        )
        conn.execute(
            f"INSERT INTO {self.precommits} (sink_id, epoch, checkpoint_id, last_batch) "
            f"VALUES ({m}, {m}, {m}, {m})",
            (self.writer, epoch, checkpoint_id, last_batch),
        )

    def commit(self, conn: Connection, epoch: int, checkpoint_id: int) -> bool:
        """Publish every pre-commit ``<= checkpoint_id``; False if it was published already."""
        m = self.mark
        committed = self.fence(conn, epoch)
        if committed is not None and committed >= checkpoint_id:
            return False
        last = self._last_batch(conn, epoch, checkpoint_id)
        columns = self.stage_columns(conn) if last is not None else None
        if last is not None and columns is not None:
            self.move(conn, columns, epoch, last)
            conn.execute(
                f"DELETE FROM {self.stage} WHERE {WRITER} = {m} AND {EPOCH} = {m} "
                f"AND {BATCH} <= {m}",
                (self.writer, epoch, last),
            )
        conn.execute(
            f"DELETE FROM {self.precommits} WHERE sink_id = {m} AND checkpoint_id <= {m}",
            (self.writer, checkpoint_id),
        )
        conn.execute(
            f"UPDATE {self.commits} SET checkpoint_id = {m} WHERE sink_id = {m}",
            (checkpoint_id, self.writer),
        )
        return True

    def abort(self, conn: Connection, epoch: int, checkpoint_id: int) -> None:
        """Discard the staged batches not covered by a pre-commit before ``checkpoint_id``."""
        m = self.mark
        self.fence(conn, epoch)
        row = conn.execute(
            f"SELECT max(last_batch) FROM {self.precommits} WHERE sink_id = {m} AND epoch = {m} "
            f"AND checkpoint_id < {m}",
            (self.writer, epoch, checkpoint_id),
        ).fetchone()
        keep = -1 if row is None or row[0] is None else int(row[0])
        if self.stage_columns(conn) is not None:
            conn.execute(
                f"DELETE FROM {self.stage} WHERE {WRITER} = {m} AND {EPOCH} = {m} "
                f"AND {BATCH} > {m}",
                (self.writer, epoch, keep),
            )
        conn.execute(
            f"DELETE FROM {self.precommits} WHERE sink_id = {m} AND checkpoint_id >= {m}",
            (self.writer, checkpoint_id),
        )

    def fence(self, conn: Connection, epoch: int) -> int | None:
        """The last published checkpoint; :class:`FencedError` unless ``epoch`` is current."""
        row = conn.execute(
            f"SELECT epoch, checkpoint_id FROM {self.commits} WHERE sink_id = {self.mark}"
            f"{self.lock}",
            (self.writer,),
        ).fetchone()
        if row is None or int(row[0]) != epoch:
            raise FencedError(
                f"sink {self.writer!r}: another process recovered it (epoch "
                f"{None if row is None else row[0]}, this one has {epoch}); this one is fenced "
                "and publishes nothing more"
            )
        return None if row[1] is None else int(row[1])

    def _last_batch(self, conn: Connection, epoch: int, checkpoint_id: int) -> int | None:
        row = conn.execute(
            f"SELECT max(last_batch) FROM {self.precommits} WHERE sink_id = {self.mark} "
            f"AND epoch = {self.mark} AND checkpoint_id <= {self.mark}",
            (self.writer, epoch, checkpoint_id),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])
