"""``strom topics``: create, list, describe, alter, delete, and their errors."""

from __future__ import annotations

from cli_helpers import Run, row, table_rows


def _partition_rows(describe_output: str) -> list[list[str]]:
    return [cells for cells in table_rows(describe_output) if cells[0].isdigit()]


def test_topic_lifecycle(strom: Run) -> None:
    created = strom(
        "topics",
        "create",
        "--topic",
        "orders",
        "--partitions",
        "2",
        "--config",
        "retention.ms=3600000",
    )
    assert "Created topic orders." in created.output
    assert row(strom("topics", "list").output, "orders")[1:] == ["2", "1"]

    strom("produce", "orders", input="a\nb\nc\n")
    described = strom("topics", "describe", "--topic", "orders").output
    assert "PartitionCount: 2" in described
    assert "ReplicationFactor: 1" in described
    assert "retention.ms=3600000" in described
    parts = _partition_rows(described)
    assert [p[0] for p in parts] == ["0", "1"]
    assert all(p[4] == "0" for p in parts), described  # earliest offsets
    assert sum(int(p[5]) for p in parts) == 3, described  # latest offsets: 3 records in all

    altered = strom("topics", "alter", "--topic", "orders", "--partitions", "4")
    assert "now has 4 partitions" in altered.output
    described = strom("topics", "describe", "--topic", "orders").output
    assert "PartitionCount: 4" in described
    assert [p[0] for p in _partition_rows(described)] == ["0", "1", "2", "3"]

    assert "Deleted topic orders." in strom("topics", "delete", "--topic", "orders").output
    assert "orders" not in strom("topics", "list").output


def test_describe_all_topics(strom: Run) -> None:
    strom("topics", "create", "--topic", "a", "--partitions", "1")
    strom("topics", "create", "--topic", "b", "--partitions", "3")
    described = strom("topics", "describe").output
    assert "Topic: a  PartitionCount: 1" in described
    assert "Topic: b  PartitionCount: 3" in described


def test_duplicate_topic(strom: Run) -> None:
    strom("topics", "create", "--topic", "dup")
    again = strom("topics", "create", "--topic", "dup", ok=False)
    assert again.exit_code == 1
    assert "cannot create topic 'dup'" in again.output
    assert "exists" in again.output
    tolerated = strom("topics", "create", "--topic", "dup", "--if-not-exists")
    assert "already exists" in tolerated.output


def test_bad_partition_counts(strom: Run) -> None:
    zero = strom("topics", "create", "--topic", "z", "--partitions", "0", ok=False)
    assert zero.exit_code == 2
    assert "--partitions" in zero.output
    strom("topics", "create", "--topic", "three", "--partitions", "3")
    fewer = strom("topics", "alter", "--topic", "three", "--partitions", "2", ok=False)
    assert fewer.exit_code == 1
    assert "has 3 partitions" in fewer.output


def test_invalid_topic_name(strom: Run) -> None:
    bad = strom("topics", "create", "--topic", "bad/name", ok=False)
    assert bad.exit_code == 1
    assert "cannot create topic 'bad/name'" in bad.output
    assert "Traceback" not in bad.output


def test_missing_topic(strom: Run) -> None:
    for args in (
        ("topics", "delete", "--topic", "nope"),
        ("topics", "describe", "--topic", "nope"),
        ("topics", "alter", "--topic", "nope", "--partitions", "5"),
    ):
        result = strom(*args, ok=False)
        assert result.exit_code == 1, result.output
        assert "topic 'nope' does not exist" in result.output
    strom("topics", "delete", "--topic", "nope", "--if-exists")


def test_replication_factor_beyond_the_cluster(strom: Run) -> None:
    result = strom("topics", "create", "--topic", "r", "--replication-factor", "3", ok=False)
    assert result.exit_code == 1
    assert "cannot create topic 'r'" in result.output
    assert "replication factor" in result.output.lower()
