"""The exactly-once (two-phase) contract, one suite over SQLite, PostgreSQL, Parquet and NDJSON.

Staged writes are invisible until ``commit``; ``abort`` discards; a new process's ``recover(c)``
publishes what a dead one pre-committed for checkpoints ``<= c`` and discards the rest; every
step is idempotent; a zombie is fenced; and a writer process killed with SIGKILL after any step
(or while renaming files), then recovered and replayed, leaves exactly the output of a run
that never failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from two_phase_helpers import (
    BATCHES,
    CHECKPOINT_EVERY,
    STEPS,
    Spec,
    batch,
    build,
    expected,
    published,
    scripted_run,
)

from strom.connectors import FileSink, MemorySource, SQLiteSink
from strom.engine.contracts import FencedError, Sink, WorkerSink
from strom.pipeline import Pipeline
from strom.runtime import run_streaming

KINDS = ["sqlite", "postgres", "parquet", "ndjson"]
CHILD = Path(__file__).with_name("two_phase_child.py")
ALL = list(range(BATCHES))


@pytest.fixture(params=KINDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Spec:
    kind = request.param
    if kind == "sqlite":
        return {"kind": kind, "path": str(tmp_path / "out.sqlite"), "table": "results"}
    if kind == "postgres":  # the server starts only for these tests
        return {"kind": kind, "dsn": request.getfixturevalue("postgres_dsn"), "table": "results"}
    return {"kind": kind, "path": str(tmp_path / "out")}


def _opened(spec: Spec, restored: int | None = None) -> Sink:
    sink = build(spec)
    sink.open()
    sink.recover(restored)
    return sink


def test_commit_publishes_exactly_once_and_readers_see_nothing_before(spec: Spec) -> None:
    sink = _opened(spec)
    assert sink.guarantee == "exactly-once"
    sink.write(batch(0))
    sink.write(batch(1))
    assert published(spec) == []
    sink.pre_commit(1)
    assert published(spec) == []  # durable, not published
    sink.write(batch(2))
    sink.commit(1)
    assert published(spec) == expected(spec, [0, 1])
    sink.commit(1)  # a replayed commit publishes nothing again
    sink.pre_commit(2)
    sink.commit(2)
    sink.commit(2)
    sink.commit(1)
    sink.close()
    assert published(spec) == expected(spec, [0, 1, 2])


def test_abort_discards_what_the_failed_checkpoint_staged(spec: Spec) -> None:
    sink = _opened(spec)
    sink.write(batch(0))
    sink.pre_commit(1)
    sink.write(batch(1))
    sink.pre_commit(2)  # checkpoint 2 fails elsewhere, before 1 is committed
    sink.write(batch(2))
    sink.abort(2)
    sink.commit(1)
    assert published(spec) == expected(spec, [0])
    sink.write(batch(1))  # the sources replay from checkpoint 1
    sink.write(batch(2))
    sink.pre_commit(3)
    sink.commit(3)
    sink.close()
    assert published(spec) == expected(spec, [0, 1, 2])


def test_recover_publishes_what_was_pre_committed_and_discards_the_rest(spec: Spec) -> None:
    dead = _opened(spec)
    dead.write(batch(0))
    dead.write(batch(1))
    dead.pre_commit(1)
    dead.commit(1)
    dead.write(batch(2))
    dead.write(batch(3))
    dead.pre_commit(2)  # checkpoint 2 recorded, the process dies before commit(2)
    dead.write(batch(4))
    dead.write(batch(5))
    dead.pre_commit(3)  # checkpoint 3 never recorded
    dead.write(batch(6))  # and a write after it: dropped without close, like a crash
    first = _opened(spec, 2)
    assert published(spec) == expected(spec, [0, 1, 2, 3])
    second = _opened(spec, 2)  # a crash right after recover is followed by another one
    assert published(spec) == expected(spec, [0, 1, 2, 3])
    for i in range(4, BATCHES):  # the replay from checkpoint 2
        second.write(batch(i))
    second.pre_commit(3)
    second.commit(3)
    second.close()
    assert published(spec) == expected(spec, ALL)
    with pytest.raises(FencedError):  # the zombies publish nothing more
        dead.commit(3)
    with pytest.raises(FencedError):
        first.pre_commit(4)
    assert published(spec) == expected(spec, ALL)


def test_recover_without_a_checkpoint_discards_everything_staged(spec: Spec) -> None:
    dead = _opened(spec)
    dead.write(batch(0))
    dead.pre_commit(1)
    dead.write(batch(1))
    fresh = _opened(spec, None)  # a run that found no checkpoint starts from scratch
    assert published(spec) == []
    fresh.write(batch(0))
    fresh.pre_commit(1)
    fresh.commit(1)
    fresh.close()
    assert published(spec) == expected(spec, [0])
    again = _opened(spec, None)  # checkpoint ids may start over: 1 is published again
    again.write(batch(1))
    again.pre_commit(1)
    again.commit(1)
    again.close()
    assert published(spec) == expected(spec, [0, 1])


def test_a_write_before_recover_is_refused(spec: Spec) -> None:
    sink = build(spec)
    sink.open()
    with pytest.raises(RuntimeError, match="needs a run with checkpoints"):
        sink.write(batch(0))
    with pytest.raises(RuntimeError, match="before recover"):
        sink.pre_commit(1)
    sink.close()
    assert published(spec) == []


def test_closing_with_uncovered_batches_says_they_are_not_published(
    spec: Spec, caplog: pytest.LogCaptureFixture
) -> None:
    sink = _opened(spec)
    sink.write(batch(0))
    sink.pre_commit(1)
    sink.commit(1)
    sink.write(batch(1))
    sink.close()
    assert "closed with 1 " in caplog.text and "not published" in caplog.text
    assert published(spec) == expected(spec, [0])
    caplog.clear()
    _opened(spec, 1).close()  # nothing written: nothing said
    assert caplog.text == ""
    assert published(spec) == expected(spec, [0])


def test_workers_stage_apart(spec: Spec) -> None:
    a, b = build(spec), build(spec)
    assert isinstance(a, WorkerSink) and isinstance(b, WorkerSink)
    a.set_worker(0)
    b.set_worker(1)
    for sink in (a, b):
        sink.open()
        sink.recover(None)
    a.write(batch(0))
    b.write(batch(1))
    a.pre_commit(1)
    b.pre_commit(1)
    a.commit(1)
    assert published(spec) == expected(spec, [0])
    b.write(batch(2))  # staged by worker 1 after its pre-commit, when worker 0 restarts
    restarted = build(spec)
    assert isinstance(restarted, WorkerSink)
    restarted.set_worker(0)
    restarted.open()
    restarted.recover(1)  # worker 0's recovery leaves worker 1's staged rows alone
    b.commit(1)
    assert sorted(published(spec)) == sorted(expected(spec, [0, 1]))


#: The kill points run by default: after recover, a write, each step of the first checkpoint,
#: the second one recorded (the first committed), the last commit. --run-slow: every step.
SAMPLE = {1, 3, 4, 5, 6, 10, STEPS}


@pytest.mark.parametrize(
    "die_at",
    [pytest.param(k, marks=() if k in SAMPLE else pytest.mark.slow) for k in range(1, STEPS + 1)],
)
def test_a_writer_killed_after_any_step_recovers_to_the_reference(
    spec: Spec, tmp_path: Path, die_at: int
) -> None:
    """kill -9 of the writer right after step ``die_at`` (recover, a write, a pre-commit, the
    checkpoint recorded, a commit); what a reader sees then is exactly the committed
    checkpoints; a new sink recovers the last recorded one and replays after it (for every
    fifth step, after another process was killed right after its recovery); then the output
    equals a run that never failed."""
    state = tmp_path / "state"
    state.mkdir()
    done = _child(spec, state, die_at)
    assert len(done) == die_at
    commits = [int(s.split()[1]) for s in done if s.startswith("commit")]
    committed = max(commits, default=0)
    assert published(spec) == expected(spec, list(range(committed * CHECKPOINT_EVERY)))
    if die_at % 5 == 0:
        assert _child(spec, state, 1)[0].startswith("recovered")
    scripted_run(spec, state)
    assert published(spec) == expected(spec, ALL)


@pytest.mark.parametrize("kind", ["parquet", "ndjson"])
@pytest.mark.parametrize("renames", [0, 1])
def test_files_killed_while_renaming_recover_to_the_reference(
    tmp_path: Path, kind: str, renames: int
) -> None:
    """Files are published one rename at a time: a kill between two of them (in a commit, then
    in the recovery's) is completed by the next recovery."""
    spec: Spec = {"kind": kind, "path": str(tmp_path / "out")}
    state = tmp_path / "state"
    state.mkdir()
    done = _child(spec, state, 0, renames)
    assert done[-1] == "recorded 1"  # killed inside commit(1)
    assert len(published(spec)) == 3 * renames
    _child(spec, state, 0, renames)  # killed again inside recover(1)'s renames
    _child(spec, state, 0)
    assert published(spec) == expected(spec, ALL)
    names = sorted(p.name for p in Path(spec["path"]).iterdir() if not p.name.startswith("."))
    assert names == [f"part-{n:08d}.{kind}" for n in range(BATCHES)]  # as a clean run names them


def _child(spec: Spec, state: Path, die_at: int, renames: int | None = None) -> list[str]:
    """Run the scripted writer in a new process; the steps it completed."""
    argv = [sys.executable, str(CHILD), json.dumps(spec), str(state), str(die_at)]
    if renames is not None:
        argv.append(str(renames))
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    killed = die_at != 0 or renames is not None
    assert run.returncode == (-9 if killed else 0), run.stderr
    return run.stdout.split("\n")[:-1]


def test_the_reference_run_in_one_process(spec: Spec, tmp_path: Path) -> None:
    scripted_run(spec, tmp_path)
    assert published(spec) == expected(spec, ALL)


# -- bad input: a clear error, and nothing staged before it is lost ---------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_bad_batches_fail_clearly_and_lose_nothing(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec: Spec = {"kind": kind, "table": "results", "options": {"key": ["id"]}}
    if kind == "sqlite":
        spec["path"] = str(tmp_path / "out.sqlite")
    else:
        spec["dsn"] = request.getfixturevalue("postgres_dsn")
    sink = _opened(spec)
    sink.write(batch(0))
    with pytest.raises(ValueError, match="one set of columns"):
        sink.write(batch(1).drop("name"))
    with pytest.raises(ValueError, match="no column"):
        sink.write(batch(1).with_columns(extra=pl.lit(1)))
    with pytest.raises(ValueError, match="null in key"):
        sink.write(batch(1).with_columns(id=pl.lit(None, pl.Int64)))
    if kind == "postgres":
        with pytest.raises(TypeError, match="cannot write column"):
            sink.write(batch(1).with_columns(id=pl.lit(b"x")))
    sink.pre_commit(1)
    sink.commit(1)
    sink.close()
    assert published(spec) == expected(spec, [0])


def test_a_table_that_refuses_a_row_fails_the_commit_and_keeps_it_staged(tmp_path: Path) -> None:
    spec: Spec = {"kind": "sqlite", "path": str(tmp_path / "o.sqlite"), "table": "results",
                  "options": {"key": ["id"]}}  # fmt: skip
    sink = _opened(spec)
    sink.write(batch(0))
    sink.pre_commit(1)
    sink.commit(1)
    sink.write(batch(0).head(1))  # insert mode: a duplicate key, found when published
    sink.write(batch(1))
    sink.pre_commit(2)
    with pytest.raises(Exception, match="UNIQUE"):
        sink.commit(2)
    assert published(spec) == expected(spec, [0])  # nothing of checkpoint 2, all of 1
    import sqlite3

    with sqlite3.connect(spec["path"]) as conn:  # the operator removes the conflicting row
        conn.execute("DELETE FROM results WHERE id = 0")
    _opened(spec, 2).close()  # the restarted run publishes checkpoint 2 whole
    assert sorted(published(spec)) == [0, 1, 2, 3, 4, 5]


def test_an_existing_table_of_another_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "o.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE results (id INTEGER, other TEXT)")
    sink = SQLiteSink(db, "results", guarantee="exactly-once")
    sink.open()
    sink.recover(None)
    with pytest.raises(ValueError, match=r"has no column\(s\) \['name'\]"):
        sink.write(batch(0))
    sink.write(batch(0).drop("name"))
    sink.pre_commit(1)
    sink.commit(1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, other FROM results").fetchall() == [
            (0, None), (1, None), (2, None),
        ]  # fmt: skip


def test_upserts_are_published_in_staging_order(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite"
    sink = SQLiteSink(db, "latest", key=["k"], mode="upsert", guarantee="exactly-once")
    sink.open()
    sink.recover(None)
    sink.write(pl.DataFrame({"k": ["a", "b", "a"], "v": [1, 2, 3]}))
    sink.write(pl.DataFrame({"k": ["b"], "v": [4]}))
    sink.pre_commit(1)
    sink.commit(1)
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT k, v FROM latest ORDER BY k").fetchall() == [
            ("a", 3), ("b", 4),
        ]  # fmt: skip


def test_a_plain_run_of_an_exactly_once_sink_says_it_needs_checkpoints(tmp_path: Path) -> None:
    p = Pipeline()
    p.source(MemorySource([[{"id": 1}]])).sink(
        FileSink(tmp_path / "out", "parquet", guarantee="exactly-once")
    )
    with pytest.raises(RuntimeError, match="strom run --checkpoint-dir"):
        run_streaming(p)


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="guarantee must be"):
        SQLiteSink(tmp_path / "x", "t", guarantee="exactly_once")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="guarantee must be"):
        FileSink(tmp_path, "parquet", guarantee="twice")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sink_id"):
        FileSink(tmp_path, "parquet", sink_id=".hidden")
    with pytest.raises(ValueError, match="sink_id"):
        SQLiteSink(tmp_path / "x", "t", sink_id="")
    assert SQLiteSink(tmp_path / "x", "t").guarantee == "at-least-once"
    assert FileSink(tmp_path, "ndjson").guarantee == "at-least-once"
