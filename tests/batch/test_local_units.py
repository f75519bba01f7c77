"""The local engine's pure decisions: sizes, the memory budget, bucket coalescing."""

from __future__ import annotations

import pytest

from strom.batch.memory import MIB, PROCESS_BASE, Budget, parse_size
from strom.batch.tasks import coalesce


def test_sizes() -> None:
    assert parse_size("4GiB") == 4 * 1024**3
    assert parse_size("100MiB") == 100 * MIB
    assert parse_size("512MB") == 512 * 1000**2
    assert parse_size("1024") == 1024
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="not a size"):
        parse_size("4 parsecs")


def test_the_budget_shares_memory_and_drops_workers_it_cannot_hold() -> None:
    roomy = Budget.plan(4 * 1024**3, 2)
    assert roomy.workers == 2 and roomy.task_input == 128 * MIB
    assert PROCESS_BASE + 2 * roomy.per_worker <= roomy.memory
    tight = Budget.plan(300 * MIB, 8)
    assert tight.workers == 1
    assert tight.task_input < tight.per_worker - PROCESS_BASE
    with pytest.raises(ValueError, match="cannot hold the driver and one worker"):
        Budget.plan(150 * MIB, 1)


def test_coalesce_groups_consecutive_buckets_within_the_target() -> None:
    assert coalesce([5, 0, 5, 5, 20, 1, 0], 10) == [[0, 2], [3], [4], [5]]
    assert coalesce([0, 0], 10) == []
    assert coalesce([3, 3, 3], 100) == [[0, 1, 2]]
