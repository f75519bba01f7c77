"""Which checkpoint a run restores, and what it refuses (in-process, real files)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ckpt_sink import DecidingStagedFileSink, StagedFileSink, committed_rows

from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg
from strom.engine.contracts import Guarantee, MetricsProvider, Sink
from strom.runtime import CheckpointError, StreamingExecutor
from strom.runtime.checkpoints import CheckpointedRun, CheckpointStore

ROWS = [{"ts": t, "k": f"k{t % 3}", "v": t} for t in range(0, 30_000, 500)]


def _executor(*sinks: Sink) -> StreamingExecutor:
    p = Pipeline()
    events = p.source(MemorySource([ROWS[0::2], ROWS[1::2]]), timestamp="ts")
    windows = events.key_by("k").window(Tumbling(5_000)).agg(agg.count(), agg.sum("v"))
    for sink in sinks:
        windows.sink(sink)
    return StreamingExecutor(p)


def _run(
    chk: Path, *sinks: Sink, rounds: int | None = None, guarantee: Guarantee = "exactly-once"
) -> CheckpointedRun:
    """Run with a checkpoint after every round; ``rounds``: stop after that many, as a crash
    would (nothing closed, the directory unlocked)."""
    run = CheckpointedRun(
        _executor(*sinks), CheckpointStore(chk), interval_ms=0, guarantee=guarantee
    )
    if rounds is None:
        run.run()
        return run
    for _ in range(rounds):
        assert run.step()
    run._writer.shutdown(wait=True)
    run.store.unlock()
    return run


def _damage_latest(chk: Path) -> int:
    latest = CheckpointStore(chk).latest()
    assert latest is not None
    state = latest.path / latest.states[0].file
    state.write_bytes(state.read_bytes()[:-1] + b"\x00")
    return latest.id


def test_a_damaged_latest_checkpoint_is_an_error_under_exactly_once(tmp_path: Path) -> None:
    _run(tmp_path / "chk", StagedFileSink(tmp_path / "out"), rounds=5)
    damaged = _damage_latest(tmp_path / "chk")
    run = CheckpointedRun(
        _executor(StagedFileSink(tmp_path / "out")), CheckpointStore(tmp_path / "chk")
    )
    with pytest.raises(CheckpointError, match=f"checkpoint {damaged}: .*damaged.*would repeat"):
        run.start()


def test_at_least_once_restores_the_newest_intact_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _run(tmp_path / "chk", MemorySink(), rounds=5, guarantee="at-least-once")
    damaged = _damage_latest(tmp_path / "chk")
    run = CheckpointedRun(_executor(MemorySink()), CheckpointStore(tmp_path / "chk"),
                          guarantee="at-least-once")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="strom.checkpoints"):
        recovered = run.start()
    assert recovered.checkpoint is not None and recovered.checkpoint.id == damaged - 1
    assert recovered.next_id == damaged + 1  # ids are never reused
    assert "trying the checkpoint before it" in caplog.text
    run.close()


def test_a_deciding_sink_picks_the_checkpoint_and_newer_ones_are_discarded(tmp_path: Path) -> None:
    out, chk = tmp_path / "out", tmp_path / "chk"
    _run(chk, DecidingStagedFileSink(out), rounds=6)
    found = CheckpointStore(chk).checkpoints()
    assert [(m.id, m.committed) for m in found] == [(3, True), (4, True), (5, True), (6, False)]
    assert (out / "decided").read_text() == "5"  # 6 was written, not yet decided
    (out / "decided").write_text("4")  # as if the sink's commit of 5 had not been made
    run = CheckpointedRun(_executor(DecidingStagedFileSink(out)), CheckpointStore(chk))
    recovered = run.start()
    assert recovered.checkpoint is not None and recovered.checkpoint.id == 4
    assert [m.id for m in CheckpointStore(chk).checkpoints()][-1] == 4
    run.run()
    reference = tmp_path / "reference"
    _run(tmp_path / "chk2", DecidingStagedFileSink(reference))
    assert committed_rows(out) == committed_rows(reference)


def test_a_decided_checkpoint_that_is_gone_is_an_error(tmp_path: Path) -> None:
    out, chk = tmp_path / "out", tmp_path / "chk"
    _run(chk, DecidingStagedFileSink(out), rounds=6)
    (out / "decided").write_text("1")  # deleted by retention long ago
    run = CheckpointedRun(_executor(DecidingStagedFileSink(out)), CheckpointStore(chk))
    with pytest.raises(CheckpointError, match="has no checkpoint 1"):
        run.start()


def test_two_deciding_sinks_are_refused(tmp_path: Path) -> None:
    sinks = (DecidingStagedFileSink(tmp_path / "a"), DecidingStagedFileSink(tmp_path / "b"))
    with pytest.raises(CheckpointError, match="at most one sink can decide"):
        CheckpointedRun(_executor(*sinks), CheckpointStore(tmp_path / "chk"))


def test_a_checkpoint_failing_aborts_it_and_fails_the_run(tmp_path: Path) -> None:
    class Failing(StagedFileSink):
        def pre_commit(self, checkpoint_id: int) -> None:
            if checkpoint_id == 3:
                raise OSError("disk full")
            super().pre_commit(checkpoint_id)

        def abort(self, checkpoint_id: int) -> None:
            aborted.append(checkpoint_id)
            super().abort(checkpoint_id)

    aborted: list[int] = []
    run = CheckpointedRun(_executor(Failing(tmp_path / "out")), CheckpointStore(tmp_path / "chk"),
                          interval_ms=0)  # fmt: skip
    with pytest.raises(OSError, match="disk full"):
        run.run()
    run.close()  # after a failure: no final checkpoint
    assert aborted == [3]
    assert [m.id for m in CheckpointStore(tmp_path / "chk").checkpoints()] == [1, 2]


def test_checkpoint_metrics(tmp_path: Path) -> None:
    run = _run(tmp_path / "chk", StagedFileSink(tmp_path / "out"))
    assert isinstance(run.stats, MetricsProvider)
    row = run.metrics()["checkpoints"]
    latest = CheckpointStore(tmp_path / "chk").latest()
    assert latest is not None and row.label == "exactly-once"
    assert row.detail["count"] == row.detail["last_id"] == latest.id
    assert row.detail["size_bytes"] == latest.size > 0
    assert row.detail["duration_us"] >= row.detail["pause_us"] > 0
    assert row.detail["restored_id"] == 0
