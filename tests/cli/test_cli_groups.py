"""``strom groups``: list and describe show a group, its committed offsets and its lag."""

from __future__ import annotations

from cli_helpers import Run, row


def test_list_and_describe_show_lag(strom: Run, topic: str) -> None:
    strom("produce", topic, input="".join(f"m{i}\n" for i in range(10)))
    strom("consume", topic, "--group", "g1", "--from-beginning", "--max-messages", "7")

    listed = strom("groups", "list").output
    assert row(listed, "g1")[1] == "Empty"

    described = strom("groups", "describe", "--group", "g1").output
    assert "Group: g1  State: Empty" in described
    assert "Total lag: 3" in described
    cells = row(described, topic)
    assert cells[1:5] == ["0", "7", "10", "3"]  # partition, committed, log-end, lag


def test_describe_unknown_group(strom: Run) -> None:
    result = strom("groups", "describe", "--group", "nobody", ok=False)
    assert result.exit_code == 1
    assert "consumer group 'nobody' does not exist" in result.output
