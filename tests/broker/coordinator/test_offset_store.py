"""OffsetStore durability: reopen, torn tails, corruption, compaction, deletes; a model test."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.broker.coordinator import OffsetStore
from strom.broker.coordinator.journal import encode, scan


@pytest.mark.parametrize("flush_always", [True, False])
def test_offsets_persist_across_reopen(tmp_path: Path, flush_always: bool) -> None:
    path = tmp_path / "sub" / "offsets.log"
    store = OffsetStore(path, flush_always=flush_always)
    store.commit("g", [("t", 0, 10, 3, "meta"), ("t", 1, 20, -1, None)], 111)
    store.commit("g", [("t", 0, 12, 4, None)], 222)
    store.commit("h", [("u", 0, 1, -1, "x")], 333)
    store.close()
    reopened = OffsetStore(path)
    got = list(reopened.fetch("g").values())
    assert [(o.topic, o.partition, o.offset, o.leader_epoch, o.metadata) for o in got] == [
        ("t", 0, 12, 4, ""),
        ("t", 1, 20, -1, ""),
    ]
    assert got[0].commit_timestamp_ms == 222
    missing = list(reopened.fetch("g", [("t", 1), ("t", 7)]).values())
    assert [(o.offset, o.leader_epoch, o.metadata) for o in missing] == [
        (20, -1, ""),
        (-1, -1, ""),
    ]
    assert reopened.groups_with_offsets() == ["g", "h"]
    assert reopened.fetch("nobody") == {}
    reopened.close()


def test_unflushed_commits_survive_process_crash(tmp_path: Path) -> None:
    path = tmp_path / "offsets.log"
    store = OffsetStore(path, flush_always=False)
    store.commit("g", [("t", 0, 5, -1, None)])
    # No close(): the bytes are in the OS already, which is what a process crash keeps.
    assert OffsetStore(path).fetch("g", [("t", 0)])[("t", 0)].offset == 5
    store.close()


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_is_dropped_on_open(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "offsets.log"
    store = OffsetStore(path)
    store.commit("g", [("t", 0, 1, -1, None)])
    store.commit("g", [("t", 0, 2, -1, None)])
    store.close()
    good = path.stat().st_size
    tail = encode({"t": "c", "g": "g", "o": [["t", 0, 3, -1, "", 0]]})
    with open(path, "ab") as f:
        f.write(tail[:cut])
    store = OffsetStore(path)
    assert store.fetch("g", [("t", 0)])[("t", 0)].offset == 2
    assert path.stat().st_size == good  # truncated back to the last whole record
    store.commit("g", [("t", 0, 4, -1, None)])
    store.close()
    assert OffsetStore(path).fetch("g", [("t", 0)])[("t", 0)].offset == 4


def test_corrupt_record_ends_the_log(tmp_path: Path) -> None:
    path = tmp_path / "offsets.log"
    store = OffsetStore(path)
    store.commit("g", [("t", 0, 1, -1, None)])
    first = path.stat().st_size
    store.commit("g", [("t", 0, 2, -1, None)])
    store.close()
    data = bytearray(path.read_bytes())
    data[first + 10] ^= 0xFF  # flip a payload byte of the second record
    path.write_bytes(bytes(data))
    store = OffsetStore(path)
    assert store.fetch("g", [("t", 0)])[("t", 0)].offset == 1
    store.close()


def test_compaction_while_running_and_on_open(tmp_path: Path) -> None:
    path = tmp_path / "offsets.log"
    store = OffsetStore(path, compact_min_bytes=4096)
    for i in range(2000):
        store.commit("g", [("t", i % 4, i, -1, None)])
    assert store.file_size < 4096 * 3
    store.close()
    reopened = OffsetStore(path, compact_min_bytes=4096)
    assert [o.offset for o in reopened.fetch("g").values()] == [1996, 1997, 1998, 1999]
    reopened.close()
    # A journal grown while compaction was off is compacted when opened with it on.
    big = OffsetStore(path, compact_min_bytes=1 << 30)
    for i in range(500):
        big.commit("g", [("t", 0, i, -1, None)])
    big.close()
    grown = path.stat().st_size
    small = OffsetStore(path, compact_min_bytes=1024)
    assert path.stat().st_size < grown / 10
    assert small.fetch("g", [("t", 0)])[("t", 0)].offset == 499
    small.close()
    assert not path.with_name(path.name + ".tmp").exists()


def test_deletes_persist(tmp_path: Path) -> None:
    path = tmp_path / "offsets.log"
    store = OffsetStore(path)
    store.commit("a", [("t", 0, 1, -1, None), ("u", 0, 2, -1, None)])
    store.commit("b", [("t", 0, 3, -1, None)])
    store.commit("c", [("u", 1, 4, -1, None), ("v", 0, 5, -1, None)])
    store.delete_topic("t")
    assert store.delete_group("c")
    assert not store.delete_group("zzz")
    store.commit("d", [("w", 0, 1, -1, None), ("w", 1, 1, -1, None)])
    store.delete_offsets("d", [("w", 0), ("nope", 3)])
    store.close()
    store = OffsetStore(path)
    assert store.groups_with_offsets() == ["a", "d"]
    assert [(o.topic, o.offset) for o in store.fetch("a").values()] == [("u", 2)]
    assert [(o.topic, o.partition) for o in store.fetch("d").values()] == [("w", 1)]
    store.close()


def test_interrupted_compaction_temp_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "offsets.log"
    store = OffsetStore(path)
    store.commit("g", [("t", 0, 7, -1, None)])
    store.close()
    path.with_name(path.name + ".tmp").write_bytes(b"half a compaction")
    store = OffsetStore(path)
    assert store.fetch("g", [("t", 0)])[("t", 0)].offset == 7
    store.close()


def test_scan_stops_at_garbage() -> None:
    data = encode({"a": 1}) + encode({"b": 2})
    records, end = scan(data + b"\x00\x00\x00\x05junk")
    assert records == [{"a": 1}, {"b": 2}] and end == len(data)


_topic = st.sampled_from(["t", "u"])
_group = st.sampled_from(["g1", "g2", "g3"])
_op = st.one_of(
    st.tuples(
        st.just("commit"),
        _group,
        st.lists(
            st.tuples(_topic, st.integers(0, 2), st.integers(0, 2**40), st.text(max_size=5)),
            min_size=1,
            max_size=3,
        ),
    ),
    st.tuples(st.just("delete_group"), _group),
    st.tuples(st.just("delete_topic"), _topic),
    st.tuples(st.just("reopen")),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_op, max_size=25))
def test_store_matches_a_dict_model(ops: list[tuple[object, ...]]) -> None:
    model: dict[str, dict[tuple[str, int], tuple[int, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "o.log"
        store = OffsetStore(path, compact_min_bytes=256)
        for op in ops:
            if op[0] == "commit":
                _, group, entries = op
                assert isinstance(group, str) and isinstance(entries, list)
                store.commit(group, [(t, p, o, -1, m) for t, p, o, m in entries])
                for t, p, o, m in entries:
                    model.setdefault(group, {})[(t, p)] = (o, m)
            elif op[0] == "delete_group":
                assert isinstance(op[1], str)
                store.delete_group(op[1])
                model.pop(op[1], None)
            elif op[0] == "delete_topic":
                store.delete_topic(str(op[1]))
                for group in list(model):
                    model[group] = {k: v for k, v in model[group].items() if k[0] != op[1]}
                    if not model[group]:
                        del model[group]
            else:
                store.close()
                store = OffsetStore(path, compact_min_bytes=256)
        store.close()
        store = OffsetStore(path, compact_min_bytes=256)
        assert store.groups_with_offsets() == sorted(model)
        for group, offsets in model.items():
            got = {
                (o.topic, o.partition): (o.offset, o.metadata) for o in store.fetch(group).values()
            }
            assert got == offsets
        store.close()


def test_transactional_offsets_are_staged_durably_and_decided_once(tmp_path: Path) -> None:
    path = tmp_path / "offsets.log"
    store = OffsetStore(path, compact_min_bytes=1)
    store.commit("g", [("t", 0, 5, -1, None)], 1)
    store.commit_pending("g", 7, [("t", 0, 9, -1, "m"), ("t", 1, 3, -1, None)], 2)
    store.commit_pending("g", 8, [("t", 2, 4, -1, None)], 3)
    assert store.pending_partitions("g") == {("t", 0), ("t", 1), ("t", 2)}
    assert store.fetch("g", [("t", 0)])[("t", 0)].offset == 5  # staged offsets are not visible
    store.compact()
    store.close()
    # Staged offsets survive a restart (and compaction) as staged, not as committed.
    store = OffsetStore(path)
    assert store.pending_partitions("g") == {("t", 0), ("t", 1), ("t", 2)}
    store.complete_pending("g", 7, commit=True)
    store.complete_pending("g", 8, commit=False)
    store.complete_pending("g", 7, commit=False)  # a re-applied decision changes nothing
    assert store.pending_partitions("g") == set()
    offsets = {k: v.offset for k, v in store.fetch("g").items()}
    assert offsets == {("t", 0): 9, ("t", 1): 3}
    store.close()
    assert {k: v.offset for k, v in OffsetStore(path).fetch("g").items()} == offsets
