"""PostgresSink with guarantee="exactly-once": what only PostgreSQL has (schemas, lost connections,
upserts deduplicated in SQL). The contract itself: ``test_two_phase_sinks.py``."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import polars as pl
import psycopg
from postgres_server import PostgresServer

from strom.connectors import PostgresSink


def select(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def _sink(dsn: str, table: str = "t", **options: Any) -> PostgresSink:
    sink = PostgresSink(dsn, table, guarantee="exactly-once", retry_backoff_s=0.01, **options)
    sink.open()
    sink.recover(None)
    return sink


def test_upserts_publish_the_last_staged_row_of_each_key(postgres_dsn: str) -> None:
    sink = _sink(postgres_dsn, mode="upsert", key=["k"])
    sink.write(pl.DataFrame({"k": ["a", "b", "a"], "v": [1, 2, 3]}))
    sink.write(pl.DataFrame({"k": ["b", "c"], "v": [4, 5]}))
    sink.pre_commit(1)
    sink.commit(1)
    sink.write(pl.DataFrame({"k": ["a"], "v": [6]}))
    sink.pre_commit(2)
    sink.commit(2)
    sink.close()
    assert select(postgres_dsn, "SELECT k, v FROM t ORDER BY k") == [("a", 6), ("b", 4), ("c", 5)]


def test_a_schema_qualified_table_keeps_its_staging_and_ledger_in_its_schema(
    postgres_dsn: str,
) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA other")
    try:
        sink = _sink(postgres_dsn, "other.t")
        sink.write(pl.DataFrame({"k": [1, 2]}))
        sink.pre_commit(1)
        assert select(postgres_dsn, "SELECT count(*) FROM other._strom_stage_t") == [(2,)]
        sink.commit(1)
        sink.close()
        assert select(postgres_dsn, "SELECT k FROM other.t ORDER BY k") == [(1,), (2,)]
        assert select(postgres_dsn, "SELECT sink_id, checkpoint_id FROM "
                      "other._strom_sink_commits") == [("t", 1)]  # fmt: skip
        assert select(postgres_dsn, "SELECT count(*) FROM other._strom_stage_t") == [(0,)]
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA other CASCADE")


def test_lost_connections_between_the_phases_are_retried(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    def kill_connections() -> None:
        with postgres_server.connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
                "pg_backend_pid() AND datname = current_database() "
                "AND backend_type = 'client backend'"
            )

    sink = _sink(postgres_dsn, key=["k"])
    sink.write(pl.DataFrame({"k": [1, 2]}))
    kill_connections()
    sink.write(pl.DataFrame({"k": [3]}))
    kill_connections()
    sink.pre_commit(1)
    kill_connections()
    sink.commit(1)
    sink.close()
    assert select(postgres_dsn, "SELECT k FROM t ORDER BY k") == [(1,), (2,), (3,)]


class _CommitEater:
    """A TCP proxy to the server that, once armed, closes the connection in place of passing
    the server's answer to a COMMIT on: the server has committed, the client never learns it."""

    ANSWER = b"C\x00\x00\x00\x0bCOMMIT\x00"  # CommandComplete("COMMIT")

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = threading.Event()
        self.eaten = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if answers and self.armed.is_set() and self.ANSWER in data:
                    self.armed.clear()
                    self.eaten += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_staging_write_whose_commit_answer_was_lost_is_staged_once(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    """The connection is lost just after the server committed a staged batch: the sink
    reconnects, finds the batch staged, and does not copy it again; so for a pre-commit and
    a commit (done once, then found recorded)."""
    proxy = _CommitEater(postgres_server.port)
    schema = select(postgres_dsn, "SELECT current_schema()")[0][0]
    host, port = proxy.address
    dsn = f"host={host} port={port} user=postgres dbname=strom_test " \
          f"options='-c search_path={schema}'"  # fmt: skip
    try:
        sink = _sink(dsn)
        sink.write(pl.DataFrame({"k": [1, 2]}))
        proxy.armed.set()
        sink.write(pl.DataFrame({"k": [3]}))
        assert proxy.eaten == 1
        for step in (sink.pre_commit, sink.commit, sink.commit):  # and both phases' answers
            proxy.armed.set()
            step(1)
        assert proxy.eaten == 4
        sink.close()
    finally:
        proxy.close()
    assert select(postgres_dsn, "SELECT k FROM t ORDER BY k") == [(1,), (2,), (3,)]


def test_readers_see_whole_checkpoints(postgres_dsn: str) -> None:
    """A reader's snapshot holds every row of a checkpoint or none: the move is one
    transaction (a REPEATABLE READ reader opened before the commit sees none of it)."""
    sink = _sink(postgres_dsn)
    sink.write(pl.DataFrame({"k": [0]}))
    sink.pre_commit(1)
    sink.commit(1)
    sink.write(pl.DataFrame({"k": list(range(1, 5_001))}))
    sink.pre_commit(2)
    with psycopg.connect(postgres_dsn) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)
        sink.commit(2)
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert select(postgres_dsn, "SELECT count(*) FROM t") == [(5_001,)]
    sink.close()
