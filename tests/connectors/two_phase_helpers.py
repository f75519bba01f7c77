"""What the two-phase sink tests share with the writer process they kill: sinks built from a JSON
spec, the batches, the readers of what a sink published, and one scripted run of checkpoints."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from strom.connectors import FileSink, FileSource, SQLiteSink
from strom.engine.contracts import Sink

#: Batches of one run, and a checkpoint after every CHECKPOINT_EVERY of them.
BATCHES = 8
CHECKPOINT_EVERY = 2

Spec = dict[str, Any]


def batch(i: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [3 * i, 3 * i + 1, 3 * i + 2], "name": [f"b{i}", None, f"b{i}!"]},
        schema={"id": pl.Int64, "name": pl.String},
    )


def ids(*batches: int) -> list[int]:
    return [n for i in batches for n in batch(i).get_column("id").to_list()]


def build(spec: Spec) -> Sink:
    """A new exactly-once sink instance of ``spec`` (the same sink each time)."""
    kind = spec["kind"]
    options = {"guarantee": "exactly-once", **spec.get("options", {})}
    if kind == "sqlite":
        return SQLiteSink(spec["path"], spec["table"], **options)
    if kind == "postgres":
        from strom.connectors import PostgresSink

        return PostgresSink(spec["dsn"], spec["table"], **options)
    return FileSink(spec["path"], kind, **options)


def published(spec: Spec) -> list[int]:
    """The ids a reader of the target sees (not the sink): in publication order, except
    PostgreSQL's, sorted (a heap has no order)."""
    kind = spec["kind"]
    if kind == "sqlite":
        if not Path(spec["path"]).exists():
            return []
        with sqlite3.connect(spec["path"]) as conn:
            try:
                rows = conn.execute(f'SELECT id FROM "{spec["table"]}" ORDER BY rowid').fetchall()
            except sqlite3.OperationalError:  # no such table: nothing published yet
                return []
        return [r[0] for r in rows]
    if kind == "postgres":
        import psycopg

        with psycopg.connect(spec["dsn"], autocommit=True) as pg:
            if pg.execute("SELECT to_regclass(%s)", (spec["table"],)).fetchone() == (None,):
                return []
            rows = pg.execute(f"SELECT id FROM {spec['table']} ORDER BY id").fetchall()
        return [int(r[0]) for r in rows]
    try:
        source = FileSource(str(Path(spec["path"]) / f"*.{kind}"), kind)
    except FileNotFoundError:
        return []
    return [int(i) for i in source.scan_partition(0).collect().get_column("id")]


def expected(spec: Spec, batches: list[int]) -> list[int]:
    got = ids(*batches)
    return sorted(got) if spec["kind"] == "postgres" else got


def scripted_run(
    spec: Spec,
    state: Path,
    *,
    die_at: int | None = None,
    on_step: Callable[[str], None] | None = None,
) -> None:
    """One writer process as a checkpointing run drives its sink: restore the last recorded
    checkpoint (``state/checkpoints``), replay the batches after it, checkpoint every
    :data:`CHECKPOINT_EVERY` batches (pre_commit, record, commit), to the end. With
    ``die_at``, the process kills itself (SIGKILL) right after that many steps."""
    log = state / "checkpoints"
    recorded = [int(x) for x in log.read_text().split()] if log.exists() else []
    restored = recorded[-1] if recorded else None
    steps = 0

    def step(what: str) -> None:
        nonlocal steps
        steps += 1
        if on_step is not None:
            on_step(what)
        if die_at is not None and steps == die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    sink = build(spec)
    sink.open()
    sink.recover(restored)
    step(f"recovered {restored}")
    first = 0 if restored is None else restored * CHECKPOINT_EVERY
    for i in range(first, BATCHES):
        sink.write(batch(i))
        step(f"write {i}")
        if (i + 1) % CHECKPOINT_EVERY == 0:
            c = (i + 1) // CHECKPOINT_EVERY
            sink.pre_commit(c)
            step(f"pre_commit {c}")
            with log.open("a") as out:  # the checkpoint is taken: recorded durably
                out.write(f"{c}\n")
                out.flush()
                os.fsync(out.fileno())
            step(f"recorded {c}")
            sink.commit(c)
            step(f"commit {c}")
    sink.close()


#: Steps of a whole scripted run from scratch: recover, every write, three per checkpoint.
STEPS = 1 + BATCHES + 3 * (BATCHES // CHECKPOINT_EVERY)
