"""The checkpoint store: atomic checkpoints, what is ignored (warned) or refused, retention."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg
from strom.runtime import ExecutorSnapshot, StreamingExecutor
from strom.runtime.checkpoints import CheckpointError, CheckpointStore
from strom.runtime.checkpoints.store import MANIFEST


def _snapshot() -> ExecutorSnapshot:
    """A real executor's snapshot, holding window state."""
    rows = [{"ts": t, "k": f"k{t % 3}", "v": t} for t in range(0, 5_000, 250)]
    p = Pipeline()
    events = p.source(MemorySource([[rows[:10], rows[10:]]]), timestamp="ts")
    events.key_by("k").window(Tumbling(10_000)).agg(agg.count(), agg.sum("v")).sink(MemorySink())
    executor = StreamingExecutor(p)
    executor.step()
    snapshot = executor.snapshot()
    assert any(op.state_size() for op in executor.stateful_operators().values())
    executor.close()
    return snapshot


def _write(store: CheckpointStore, checkpoint_id: int, snapshot: ExecutorSnapshot) -> None:
    store.write(checkpoint_id, snapshot, fingerprint={"operators": ["x"]},
                guarantee="exactly-once", decider=None, wall_time_ms=1_000 * checkpoint_id,
                pause_us=5)  # fmt: skip


def test_a_written_checkpoint_lists_and_loads_back(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "chk")
    store.lock()
    snapshot = _snapshot()
    _write(store, 1, snapshot)
    (manifest,) = CheckpointStore(tmp_path / "chk").checkpoints()  # a reader needs no lock
    assert (manifest.id, manifest.wall_time_ms, manifest.committed) == (1, 1_000, True)
    assert manifest.positions == {"source0": [{"batch": 1}]}
    assert manifest.size == sum(s.size for s in manifest.states) > 0
    loaded = store.load(manifest)
    assert loaded.clock_ms == snapshot.clock_ms
    assert loaded.states.keys() == snapshot.states.keys()
    assert all(loaded.states[n].equals(s) for n, s in snapshot.states.items())
    with pytest.raises(CheckpointError, match="ids increase"):
        _write(store, 1, snapshot)


def test_torn_and_manifest_less_checkpoints_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path)
    store.lock()
    _write(store, 1, _snapshot())
    store.unlock()
    (tmp_path / ".tmp-chk-000000000002-deadbeef").mkdir()  # a write cut short by a crash
    (tmp_path / ".tmp-chk-000000000002-deadbeef" / "state-000.bin").write_bytes(b"half")
    (tmp_path / "chk-000000000003").mkdir()  # a directory without a manifest
    bad = tmp_path / "chk-000000000004"
    bad.mkdir()
    (bad / MANIFEST).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="strom.checkpoints"):
        assert [m.id for m in store.checkpoints()] == [1]
    warned = caplog.text
    assert "unfinished checkpoint write" in warned
    assert "chk-000000000003: no manifest" in warned
    assert "chk-000000000004: unreadable manifest" in warned
    assert store.latest() is not None and store.latest().id == 1  # type: ignore[union-attr]
    store.lock()  # a writer removes what crashed writers left, and numbers above all of it
    assert not (tmp_path / ".tmp-chk-000000000002-deadbeef").exists()
    assert store.highest_id() == 4


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_state_file_is_detected(tmp_path: Path, damage: str) -> None:
    store = CheckpointStore(tmp_path)
    store.lock()
    _write(store, 1, _snapshot())
    (manifest,) = store.checkpoints()
    path = manifest.path / manifest.states[0].file
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        match = "is damaged: its sha256"
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-1]))
        match = "is damaged: .* bytes, the manifest says"
    else:
        path.unlink()
        match = "cannot be read"
    with pytest.raises(CheckpointError, match=f"checkpoint 1: state file state-000.bin .*{match}"):
        store.load(manifest)


def test_retention_keeps_the_newest_and_deletes_only_after_the_next_is_complete(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path)
    store.lock()
    snapshot = _snapshot()
    for checkpoint_id in range(1, 6):
        _write(store, checkpoint_id, snapshot)
        store.retain(3)
        ids = [m.id for m in store.checkpoints()]
        assert ids == list(range(max(1, checkpoint_id - 2), checkpoint_id + 1))
    (tmp_path / "chk-000000000002").mkdir()  # an old invalid one goes too
    assert store.retain(2) == [2, 3]
    assert [m.id for m in store.checkpoints()] == [4, 5]
    assert store.discard(4) == [5]
    assert [m.id for m in store.checkpoints()] == [4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK", "chk-000000000004"]


def test_a_directory_is_written_by_one_run_at_a_time(tmp_path: Path) -> None:
    first = CheckpointStore(tmp_path)
    first.lock()
    with pytest.raises(CheckpointError, match="in use by another run"):
        CheckpointStore(tmp_path).lock()
    first.unlock()
    CheckpointStore(tmp_path).lock()


def test_writing_needs_the_lock(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="lock"):
        _write(CheckpointStore(tmp_path), 1, _snapshot())


def test_the_manifest_is_json_with_what_a_checkpoint_holds(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.lock()
    _write(store, 7, _snapshot())
    raw = json.loads((tmp_path / "chk-000000000007" / MANIFEST).read_text())
    assert {"format", "id", "wall_time_ms", "clock_ms", "fingerprint", "positions", "states",
            "guarantee", "decider", "pause_us"} <= raw.keys()  # fmt: skip
    (state,) = raw["states"]
    assert (state["operator"], state["file"]) == ("2:WindowAgg", "state-000.bin")
    assert len(state["sha256"]) == 64
    assert state["size"] == (tmp_path / "chk-000000000007" / "state-000.bin").stat().st_size
    assert raw["positions"] == {"source0": [{"batch": 1}]}
