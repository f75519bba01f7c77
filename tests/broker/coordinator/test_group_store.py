"""GroupStore and its records: the file (compaction, failed writes), the pure encode/decode."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import pytest
from coord_harness import Harness, run, settled_group
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.broker.coordinator import GroupStore, errors
from strom.broker.coordinator.group import Group, GroupState, Member
from strom.broker.coordinator.group_store import group_record, persist_key, restore_group
from strom.broker.coordinator.journal import JournalFile, scan


def test_compaction_keeps_the_latest_record(tmp_path: Path) -> None:
    path = tmp_path / "groups.log"
    store = GroupStore(path, compact_min_bytes=2048)
    for generation in range(1, 200):
        store.update(settled_group("g", members=2, generation=generation))
    store.update(settled_group("h", members=0, generation=3))
    store.update(settled_group("gone", members=1))
    store.delete("gone")
    assert store.file_size < 2048 * 3
    store.close()
    reopened = GroupStore(path)
    groups = {g.group_id: g for g in reopened.load(0)}
    assert sorted(groups) == ["g", "h"]
    assert groups["g"].generation_id == 199 and groups["g"].is_(GroupState.STABLE)
    assert groups["h"].generation_id == 3 and groups["h"].is_(GroupState.EMPTY)
    reopened.close()
    assert not path.with_name(path.name + ".tmp").exists()


@pytest.mark.parametrize("flush_always", [True, False])
def test_writes_reach_the_file_before_returning(tmp_path: Path, flush_always: bool) -> None:
    store = GroupStore(tmp_path / "groups.log", flush_always=flush_always)
    assert store.update(settled_group("g", members=1))
    assert not store.update(settled_group("g", members=1))  # same settled state: nothing written
    # No close(): a process crash keeps what reached the OS.
    crashed = GroupStore(tmp_path / "groups.log")
    assert [g.group_id for g in crashed.load(0)] == ["g"]
    crashed.close()
    store.close()


class _DiskFull:
    """Stands in for a journal's file: writes a few bytes of a record, then fails."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: memoryview) -> int:
        self.real.write(data[:5])
        raise OSError(28, "No space left on device")

    def fileno(self) -> int:
        return int(self.real.fileno())


def test_failed_write_leaves_no_partial_record(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    jf = JournalFile(path)
    assert jf.open() == []
    jf.append({"n": 1})
    real = jf._file
    jf._file = _DiskFull(real)  # type: ignore[assignment]
    with pytest.raises(OSError):
        jf.append({"n": 2})
    jf._file = real
    jf.append({"n": 3})
    jf.close()
    assert scan(path.read_bytes()) == ([{"n": 1}, {"n": 3}], path.stat().st_size)


def test_coordinator_carries_on_when_the_store_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        h = Harness(tmp_path, persist=True)
        assert h.store is not None
        real = h.store._journal._file
        h.store._journal._file = _DiskFull(real)  # type: ignore[assignment]
        [a] = await h.form("g", 1)
        assert h.state() == "Stable" and h.heartbeat("g", a) == errors.NONE
        assert "could not persist group g" in caplog.text
        h.store._journal._file = real
        h.coord.leave_group("g", [(a.member_id, None)])  # the next settled state is written
        h.restart()
        assert (h.state(), h.coord.describe_group("g").generation_id) == ("Empty", 2)
        h.close()

    run(main)


# -- the pure functions ------------------------------------------------------------------------


def test_persist_key_only_for_settled_groups() -> None:
    group = settled_group("g", members=2)
    key = persist_key(group)
    assert key is not None
    group.members["m0"].assignment = b"other"  # not part of the key: needs a new generation
    assert persist_key(group) == key
    group.state = GroupState.PREPARING_REBALANCE
    assert persist_key(group) is None
    group.state = GroupState.COMPLETING_REBALANCE
    assert persist_key(group) is None
    assert persist_key(Group("new")) is None  # never had a generation
    assert persist_key(settled_group("e", members=0, generation=4)) is not None


def test_restore_sets_sessions_from_the_load_time() -> None:
    restored = restore_group(group_record(settled_group("g", members=3, generation=7)), 5000)
    assert restored.is_(GroupState.STABLE)
    assert (restored.generation_id, restored.leader_id, restored.protocol_name) == (
        7,
        "m0",
        "range",
    )
    assert restored.static_members == {"inst": "m1"}
    assert [m.deadline_ms for m in restored.members.values()] == [6000, 6000, 6000]
    assert not any(m.is_new for m in restored.members.values())
    assert restored.pending_sync == set() and restored.empty_since_ms == 5000


@pytest.mark.parametrize(
    "damage",
    [
        {"leader": "nobody"},
        {"proto": "sticky"},
        {"v": 2},
        {"gen": "1"},
        {"members": "none"},
        {"type": None},
    ],
)
def test_restore_rejects_inconsistent_records(damage: dict[str, Any]) -> None:
    record = {**group_record(settled_group("g", members=2)), **damage}
    with pytest.raises(ValueError):
        restore_group(record, 0)


def test_restore_rejects_bad_members() -> None:
    record = group_record(settled_group("g", members=2))
    record["members"][1]["assignment"] = "not base64!"
    with pytest.raises(ValueError):
        restore_group(record, 0)
    record = group_record(settled_group("g", members=2))
    record["members"][1]["id"] = "m0"
    with pytest.raises(ValueError):
        restore_group(record, 0)


_text = st.text(max_size=8)
_member = st.fixed_dictionaries(
    {
        "instance": st.none() | _text,
        "client": _text,
        "host": _text,
        "session": st.integers(1, 10**6),
        "rebalance": st.integers(1, 10**6),
        "extra": st.lists(st.tuples(_text, st.binary(max_size=16)), max_size=2),
        "meta": st.binary(max_size=32),
        "assignment": st.binary(max_size=32),
    }
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_member, max_size=4), st.integers(1, 2**31 - 1), _text)
def test_record_round_trip(members: list[dict[str, Any]], generation: int, gid: str) -> None:
    group = Group(gid, generation_id=generation, protocol_type="consumer")
    instances: set[str] = set()
    for i, m in enumerate(members):
        instance = m["instance"] if m["instance"] not in instances else None
        if instance is not None:
            instances.add(instance)
        protocols = [("range", m["meta"]), *[(f"x{n}", b) for n, b in m["extra"]]]
        group.add(
            Member(
                f"id-{i}",
                instance,
                m["client"],
                m["host"],
                m["session"],
                m["rebalance"],
                "consumer",
                protocols,
                assignment=m["assignment"],
                is_new=False,
            )
        )
    if members:
        group.protocol_name = "range"
        group.leader_id = f"id-{len(members) - 1}"
        group.state = GroupState.STABLE
    record = group_record(group)
    restored = restore_group(record, 0)
    assert group_record(restored) == record
    assert persist_key(restored) == persist_key(group)
    # And through the file.
    with tempfile.TemporaryDirectory() as tmp:
        store = GroupStore(Path(tmp) / "g.log")
        store.update(group)
        store.close()
        again = GroupStore(Path(tmp) / "g.log")
        [loaded] = again.load(0)
        again.close()
        assert group_record(loaded) == record
    assert all(
        base64.b64decode(e["assignment"]) == m.assignment
        for e, m in zip(record["members"], group.members.values(), strict=True)
    )
