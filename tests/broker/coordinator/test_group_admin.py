"""Offset-commit validation (Kafka's rules), ListGroups, DescribeGroups, DeleteGroups,
OffsetDelete."""

from __future__ import annotations

import struct
from pathlib import Path

from coord_harness import Harness, run, settle

from strom.broker.coordinator import GroupConfig, GroupCoordinator, OffsetStore, errors


def _commit(h: Harness, gen: int, member: str, instance: str | None = None) -> int:
    [result] = h.coord.commit_offsets("g", gen, member, instance, [("t", 0, 5, -1, None)])
    return result.error_code


def test_simple_consumer_commits_to_unknown_or_empty_group(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.coord.validate_commit("g", -1, "", None) == errors.NONE
    assert _commit(h, -1, "") == errors.NONE
    assert h.coord.fetch_offsets("g", [("t", 0)])[("t", 0)].offset == 5
    # Unknown group, but a generation: a zombie from an older incarnation.
    assert h.coord.validate_commit("other", 3, "m", None) == errors.ILLEGAL_GENERATION
    # A member id on a group without members is unknown.
    assert h.coord.validate_commit("g", -1, "m", None) == errors.UNKNOWN_MEMBER_ID
    assert h.coord.validate_commit("g", -1, "", "inst") == errors.UNKNOWN_MEMBER_ID


def test_commit_rules_for_an_active_group(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a, b = await h.form("g", 2)
        gen = a.generation_id
        assert _commit(h, gen, a.member_id) == errors.NONE
        assert _commit(h, gen - 1, a.member_id) == errors.ILLEGAL_GENERATION
        assert _commit(h, gen, "ghost") == errors.UNKNOWN_MEMBER_ID
        assert _commit(h, -1, "") == errors.UNKNOWN_MEMBER_ID  # non-empty group: members only
        # PreparingRebalance: the current generation may still commit.
        rejoin = h.join("g", a.member_id)
        await settle()
        assert h.state() == "PreparingRebalance"
        assert _commit(h, gen, b.member_id) == errors.NONE
        # CompletingRebalance: REBALANCE_IN_PROGRESS even for a valid member and generation.
        await h.join("g", b.member_id)
        assert h.state() == "CompletingRebalance"
        assert _commit(h, gen + 1, b.member_id) == errors.REBALANCE_IN_PROGRESS
        assert (await rejoin).generation_id == gen + 1

    run(main)


def test_commit_counts_as_heartbeat(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        [a] = await h.form("g", 1, session_ms=100)
        for _ in range(5):
            await h.advance(60)
            assert _commit(h, a.generation_id, a.member_id) == errors.NONE
        assert h.state() == "Stable"

    run(main)


def test_static_member_commit_fencing(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        [a] = await h.form("g", 1, instance="inst")
        assert _commit(h, a.generation_id, a.member_id, "inst") == errors.NONE
        assert _commit(h, a.generation_id, "old-id", "inst") == errors.FENCED_INSTANCE_ID

    run(main)


def test_per_partition_commit_errors(tmp_path: Path) -> None:
    offsets = OffsetStore(tmp_path / "o.log")
    coord = GroupCoordinator(
        offsets,
        config=GroupConfig(offset_metadata_max_bytes=4),
        partition_exists=lambda topic, partition: topic == "t" and partition < 2,
    )
    results = coord.commit_offsets(
        "g",
        -1,
        "",
        None,
        [("t", 0, 1, -1, "ok"), ("t", 1, 1, -1, "too long"), ("t", 2, 1, -1, None)],
    )
    assert [r.error_code for r in results] == [
        errors.NONE,
        errors.OFFSET_METADATA_TOO_LARGE,
        errors.UNKNOWN_TOPIC_OR_PARTITION,
    ]
    assert [o.offset for o in coord.fetch_offsets("g").values()] == [1]
    assert coord.fetch_offsets("g", [("t", 1)])[("t", 1)].offset == -1


def test_list_and_describe(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, initial_rebalance_delay_ms=10)
        a, b = await h.form("active", 2)
        h.coord.commit_offsets("simple", -1, "", None, [("t", 0, 1, -1, None)])
        pending = h.join("forming")
        await settle()
        listed = h.coord.list_groups()
        assert [(g.group_id, g.protocol_type, g.state) for g in listed] == [
            ("active", "consumer", "Stable"),
            ("forming", "consumer", "PreparingRebalance"),
            ("simple", "", "Empty"),
        ]
        assert [g.group_id for g in h.coord.list_groups(["stable", "Empty"])] == [
            "active",
            "simple",
        ]
        d = h.coord.describe_group("active")
        assert (d.state, d.protocol_type, d.protocol, d.error_code) == (
            "Stable",
            "consumer",
            "range",
            errors.NONE,
        )
        assert d.leader == a.member_id and d.generation_id == a.generation_id
        assert [(m.member_id, m.member_metadata, m.member_assignment) for m in d.members] == [
            (a.member_id, b"meta", b"a-" + a.member_id.encode()),
            (b.member_id, b"meta", b"a-" + b.member_id.encode()),
        ]
        assert d.members[0].client_host == "/127.0.0.1" and d.members[0].client_id == "client"
        forming = h.coord.describe_group("forming")
        assert forming.protocol == "" and forming.members[0].member_assignment == b""
        simple = h.coord.describe_group("simple")
        assert (simple.state, simple.exists, simple.members) == ("Empty", True, [])
        missing = h.coord.describe_group("missing")
        assert (missing.state, missing.exists, missing.error_code) == ("Dead", False, errors.NONE)
        await h.advance(10)
        assert pending.done()

    run(main)


def test_delete_groups(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        [a] = await h.form("busy", 1)
        h.coord.commit_offsets("busy", a.generation_id, a.member_id, None, [("t", 0, 3, -1, "")])
        h.coord.commit_offsets("simple", -1, "", None, [("t", 0, 1, -1, None)])
        [e] = await h.form("emptied", 1)
        h.coord.commit_offsets("emptied", e.generation_id, e.member_id, None, [("t", 1, 9, 2, "")])
        h.coord.leave_group("emptied", [(e.member_id, None)])
        result = h.coord.delete_groups(["busy", "simple", "emptied", "nope"])
        assert result == {
            "busy": errors.NON_EMPTY_GROUP,
            "simple": errors.NONE,
            "emptied": errors.NONE,
            "nope": errors.GROUP_ID_NOT_FOUND,
        }
        assert [g.group_id for g in h.coord.list_groups()] == ["busy"]
        assert h.offsets.groups_with_offsets() == ["busy"]
        assert h.coord.fetch_offsets("emptied", [("t", 1)])[("t", 1)].offset == -1
        # A deleted group can be formed again from scratch.
        [again] = await h.form("emptied", 1)
        assert again.generation_id == 1

    run(main)


def _subscription(*topics: str) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def test_delete_offsets(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        [a] = await h.form("g", 1, protocols=[("range", _subscription("orders"))])
        commits = [("orders", 0, 1, -1, None), ("old", 0, 2, -1, None)]
        h.coord.commit_offsets("g", a.generation_id, a.member_id, None, commits)
        code, parts = h.coord.delete_offsets("g", [("orders", 0), ("old", 0)])
        assert code == errors.NONE
        assert [p.error_code for p in parts] == [errors.GROUP_SUBSCRIBED_TO_TOPIC, errors.NONE]
        assert [o.topic for o in h.coord.fetch_offsets("g").values()] == ["orders"]
        h.coord.leave_group("g", [(a.member_id, None)])
        code, parts = h.coord.delete_offsets("g", [("orders", 0)])
        assert (code, parts[0].error_code) == (errors.NONE, errors.NONE)
        assert h.coord.delete_offsets("nope", [("t", 0)]) == (errors.GROUP_ID_NOT_FOUND, [])

    run(main)


def test_empty_groups_without_offsets_are_forgotten(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, empty_group_retention_ms=1000)
        [a] = await h.form("g", 1)
        [b] = await h.form("kept", 1)
        h.coord.commit_offsets("kept", b.generation_id, b.member_id, None, [("t", 0, 1, -1, "")])
        h.coord.leave_group("g", [(a.member_id, None)])
        h.coord.leave_group("kept", [(b.member_id, None)])
        await h.advance(999)
        assert h.coord.get_group("g") is not None
        await h.advance(1)
        assert h.coord.get_group("g") is None
        assert h.coord.get_group("kept") is not None

    run(main)
