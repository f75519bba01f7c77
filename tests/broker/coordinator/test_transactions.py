"""TransactionCoordinator: the state machine, fencing, retries, timeouts, and recovery.

The coordinator runs on its real files (transaction log, producer ids, offset store) with a
manual clock; markers go to a recorder standing for the partition logs. A "crash" is an
exception the marker writer raises at a chosen step (a BaseException, so nothing catches it):
the coordinator object is then dropped without closing anything, as ``kill -9`` would, and a new
one is opened on the same files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from strom.broker.coordinator import (
    ManualClock,
    OffsetStore,
    ProducerIdManager,
    TransactionCoordinator,
    TransactionLog,
    errors,
)
from strom.broker.coordinator.transactions import MAX_EPOCH

TP0 = ("t", 0)
TP1 = ("t", 1)


class Crash(BaseException):
    """Stands for the process dying at that instant."""


class Node:
    """One broker's coordinator over ``tmp_path``; :meth:`restart` reopens it on the files."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path
        self.clock = ManualClock()
        self.markers: list[tuple[str, int, int, int, bool, int]] = []
        self.crash_after_markers: int | None = None
        self.fail_writes = False
        self.topics = {"t": 2}
        self._open()

    def _open(self) -> None:
        self.offsets = OffsetStore(self.path / "offsets.log")
        self.coord = TransactionCoordinator(
            TransactionLog(self.path / "transactions.log"),
            ProducerIdManager(self.path / "producer-ids", block_size=10),
            write_marker=self._write_marker,
            complete_offsets=self._complete_offsets,
            partition_exists=lambda t, p: 0 <= p < self.topics.get(t, 0),
            max_timeout_ms=60_000,
            clock=self.clock,
        )
        self.coord.recover()

    def _write_marker(
        self, topic: str, partition: int, pid: int, epoch: int, commit: bool, coord_epoch: int
    ) -> None:
        if self.fail_writes:
            raise OSError("disk full")
        self._maybe_crash()
        self.markers.append((topic, partition, pid, epoch, commit, coord_epoch))

    def _complete_offsets(self, group: str, pid: int, commit: bool) -> None:
        self._maybe_crash()
        self.offsets.complete_pending(group, pid, commit=commit)

    def _maybe_crash(self) -> None:
        # crash_after_markers = n: die at the step after the n-th marker (markers first, then
        # the groups' offsets), so n = number of partitions dies before the offsets.
        if self.crash_after_markers is not None and len(self.markers) >= self.crash_after_markers:
            raise Crash()

    def restart(self) -> None:
        """A new process on the same files (the old objects are abandoned, not closed)."""
        self.crash_after_markers = None
        self._open()

    def init(self, tid: str = "tx", timeout: int = 10_000) -> tuple[int, int]:
        r = self.coord.init_producer_id(tid, timeout)
        assert r.error_code == errors.NONE, r
        return r.producer_id, r.producer_epoch

    def begin(
        self, tid: str, pid: int, epoch: int, parts: tuple[tuple[str, int], ...] = (TP0, TP1)
    ) -> None:
        assert set(self.coord.add_partitions(tid, pid, epoch, parts).values()) == {errors.NONE}


def test_commit_writes_a_marker_to_every_partition(tmp_path: Path) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init()
    assert node.coord.describe("tx").state == "Empty"
    node.begin("tx", pid, epoch)
    assert node.coord.verify_produce(pid, epoch, "t", 0) == errors.NONE
    d = node.coord.describe("tx")
    assert (d.state, d.partitions) == ("Ongoing", (TP0, TP1))
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.NONE
    epoch_c = node.coord.coordinator_epoch
    assert node.markers == [
        ("t", 0, pid, epoch, True, epoch_c),
        ("t", 1, pid, epoch, True, epoch_c),
    ]
    assert node.coord.describe("tx").state == "CompleteCommit"
    # A batch after the end belongs to no transaction until the next AddPartitionsToTxn.
    assert node.coord.verify_produce(pid, epoch, "t", 0) == errors.INVALID_TXN_STATE
    node.begin("tx", pid, epoch, (TP1,))
    assert node.coord.verify_produce(pid, epoch, "t", 0) == errors.INVALID_TXN_STATE
    assert node.coord.verify_produce(pid, epoch, "t", 1) == errors.NONE


def test_end_txn_retries_conflicts_and_stale_epochs(tmp_path: Path) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init()
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.INVALID_TXN_STATE  # Empty
    node.begin("tx", pid, epoch)
    assert node.coord.end_txn("tx", pid, epoch, commit=False) == errors.NONE
    assert node.coord.end_txn("tx", pid, epoch, commit=False) == errors.NONE  # the retry
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.INVALID_TXN_STATE
    assert len(node.markers) == 2
    # Jepsen's Bufstream finding: an EndTxn of an older epoch arriving during a later
    # transaction must not end it.
    pid2, epoch2 = node.init()
    node.begin("tx", pid2, epoch2)
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.PRODUCER_FENCED
    assert node.coord.describe("tx").state == "Ongoing"
    assert node.coord.end_txn("tx", pid + 1000, epoch2, commit=True) == (
        errors.INVALID_PRODUCER_ID_MAPPING
    )
    assert node.coord.end_txn("nobody", pid, epoch, commit=True) == (
        errors.INVALID_PRODUCER_ID_MAPPING
    )


def test_init_producer_id_fences_and_aborts_the_open_transaction(tmp_path: Path) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init()
    node.begin("tx", pid, epoch)
    pid2, epoch2 = node.init()
    assert (pid2, epoch2) == (pid, epoch + 1)
    # The abort markers carry the new epoch: the zombie is fenced in the partitions too.
    assert [(m[2], m[3], m[4]) for m in node.markers] == [(pid, epoch2, False)] * 2
    assert node.coord.describe("tx").state == "Empty"
    assert node.coord.verify_produce(pid, epoch, "t", 0) == errors.INVALID_PRODUCER_EPOCH
    assert set(node.coord.add_partitions("tx", pid, epoch, [TP0]).values()) == {
        errors.PRODUCER_FENCED
    }
    assert node.coord.add_offsets("tx", pid, epoch, "g") == errors.PRODUCER_FENCED
    assert node.coord.check_offset_commit("tx", pid, epoch, "g") == errors.PRODUCER_FENCED


def test_init_producer_id_validation_kip360_and_exhausted_epochs(tmp_path: Path) -> None:
    node = Node(tmp_path)
    assert node.coord.init_producer_id("", 1000).error_code == errors.INVALID_REQUEST
    assert node.coord.init_producer_id("tx", 0).error_code == errors.INVALID_TRANSACTION_TIMEOUT
    assert node.coord.init_producer_id("tx", 60_001).error_code == (
        errors.INVALID_TRANSACTION_TIMEOUT
    )
    pid, epoch = node.init()
    bumped = node.coord.init_producer_id("tx", 1000, pid, epoch)
    assert (bumped.producer_id, bumped.producer_epoch) == (pid, epoch + 1)
    # The answer was lost: the retry of that bump gets it again, and bumps nothing.
    retry = node.coord.init_producer_id("tx", 1000, pid, epoch)
    assert (retry.error_code, retry.producer_epoch) == (errors.NONE, epoch + 1)
    assert node.coord.init_producer_id("tx", 1000, pid, epoch + 5).error_code == (
        errors.PRODUCER_FENCED
    )
    # A plain InitProducerId (a new instance) is never a "retry" of an older epoch.
    fresh = node.init()
    assert node.coord.init_producer_id("tx", 1000, pid, epoch + 1).error_code == (
        errors.PRODUCER_FENCED
    )
    assert fresh == (pid, epoch + 2)
    other, _ = node.init("other")
    assert other != pid
    node.coord._txns["tx"].producer_epoch = MAX_EPOCH
    new_pid, new_epoch = node.init()
    assert new_pid not in (pid, other) and new_epoch == 0
    assert node.coord.verify_produce(pid, MAX_EPOCH, "t", 0) == errors.INVALID_PRODUCER_ID_MAPPING


def test_add_partitions_errors(tmp_path: Path) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init()
    codes = node.coord.add_partitions("tx", pid, epoch, [TP0, ("t", 9), ("gone", 0)])
    assert codes == {
        TP0: errors.OPERATION_NOT_ATTEMPTED,
        ("t", 9): errors.UNKNOWN_TOPIC_OR_PARTITION,
        ("gone", 0): errors.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert node.coord.describe("tx").state == "Empty"
    assert node.coord.add_offsets("tx", pid, epoch, "") == errors.INVALID_GROUP_ID
    assert node.coord.describe("missing").error_code == errors.TRANSACTIONAL_ID_NOT_FOUND


def test_offsets_are_published_only_by_a_commit(tmp_path: Path) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init()
    assert node.coord.check_offset_commit("tx", pid, epoch, "g") == errors.INVALID_TXN_STATE
    assert node.coord.add_offsets("tx", pid, epoch, "g") == errors.NONE
    assert node.coord.check_offset_commit("tx", pid, epoch, "g") == errors.NONE
    assert node.coord.check_offset_commit("tx", pid, epoch, "h") == errors.INVALID_TXN_STATE
    node.offsets.commit_pending("g", pid, [("in", 0, 10, -1, None)])
    assert node.offsets.pending_partitions("g") == {("in", 0)}
    assert node.offsets.fetch("g", [("in", 0)])[("in", 0)].offset == -1
    assert node.coord.end_txn("tx", pid, epoch, commit=False) == errors.NONE
    assert node.offsets.pending_partitions("g") == set()
    assert node.offsets.fetch("g", [("in", 0)])[("in", 0)].offset == -1
    assert node.coord.add_offsets("tx", pid, epoch, "g") == errors.NONE
    node.offsets.commit_pending("g", pid, [("in", 0, 20, -1, "m")])
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.NONE
    assert node.offsets.fetch("g", [("in", 0)])[("in", 0)].offset == 20
    assert node.markers == []  # a transaction of offsets only touches no partition


def test_timeout_aborts_with_a_bumped_epoch(tmp_path: Path) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init(timeout=5_000)
    node.begin("tx", pid, epoch)
    node.clock.advance(5_000)
    assert node.coord.abort_timed_out() == []
    node.clock.advance(1)
    assert node.coord.abort_timed_out() == ["tx"]
    assert [(m[3], m[4]) for m in node.markers] == [(epoch + 1, False)] * 2
    d = node.coord.describe("tx")
    assert (d.state, d.producer_epoch) == ("CompleteAbort", epoch + 1)
    # The zombie is fenced everywhere, and cannot resume through a KIP-360 "retry".
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.PRODUCER_FENCED
    assert node.coord.verify_produce(pid, epoch, "t", 0) == errors.INVALID_PRODUCER_EPOCH
    assert node.coord.init_producer_id("tx", 5_000, pid, epoch).error_code == (
        errors.PRODUCER_FENCED
    )
    # A request that finds its own transaction expired fences it there and then.
    pid, epoch = node.init(timeout=5_000)
    node.begin("tx", pid, epoch)
    node.clock.advance(6_000)
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.PRODUCER_FENCED
    assert node.coord.describe("tx").state == "CompleteAbort"


def test_failed_markers_leave_the_decision_pending_until_written(tmp_path: Path) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init()
    node.begin("tx", pid, epoch)
    node.fail_writes = True
    # The decision is durable: EndTxn succeeds, the markers follow.
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.NONE
    assert node.coord.describe("tx").state == "PrepareCommit"
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.CONCURRENT_TRANSACTIONS
    assert node.coord.end_txn("tx", pid, epoch, commit=False) == errors.INVALID_TXN_STATE
    assert set(node.coord.add_partitions("tx", pid, epoch, [TP0]).values()) == {
        errors.CONCURRENT_TRANSACTIONS
    }
    assert node.coord.init_producer_id("tx", 1000).error_code == errors.CONCURRENT_TRANSACTIONS
    node.fail_writes = False
    node.coord.retry_markers()
    assert node.coord.describe("tx").state == "CompleteCommit"
    assert [m[4] for m in node.markers] == [True, True]


@pytest.mark.parametrize("markers_before_crash", [0, 1, 2])
@pytest.mark.parametrize("commit", [True, False])
def test_a_crash_mid_decision_is_completed_as_decided(
    tmp_path: Path, markers_before_crash: int, commit: bool
) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init()
    node.begin("tx", pid, epoch)
    assert node.coord.add_offsets("tx", pid, epoch, "g") == errors.NONE
    node.offsets.commit_pending("g", pid, [("in", 0, 7, -1, None)])
    node.crash_after_markers = markers_before_crash
    with pytest.raises(Crash):
        node.coord.end_txn("tx", pid, epoch, commit=commit)
    node.restart()
    # Every partition has the decided marker (the ones before the crash twice: harmless).
    assert [(m[0], m[1], m[4]) for m in node.markers[markers_before_crash:]] == [
        ("t", 0, commit),
        ("t", 1, commit),
    ]
    assert node.markers[-1][5] == node.coord.coordinator_epoch > node.markers[0][5] or (
        markers_before_crash == 0
    )
    d = node.coord.describe("tx")
    assert d.state == ("CompleteCommit" if commit else "CompleteAbort")
    assert node.offsets.fetch("g", [("in", 0)])[("in", 0)].offset == (7 if commit else -1)
    assert node.offsets.pending_partitions("g") == set()
    # The same producer carries on: a retry of its EndTxn is answered as the outcome.
    assert node.coord.end_txn("tx", pid, epoch, commit=commit) == errors.NONE
    node.restart()
    assert node.coord.describe("tx").state == d.state
    assert len(node.markers) == markers_before_crash + 2  # nothing rewritten once complete


def test_ids_epochs_and_open_transactions_survive_restarts(tmp_path: Path) -> None:
    node = Node(tmp_path)
    pid, epoch = node.init()
    node.begin("tx", pid, epoch)
    node.restart()
    d = node.coord.describe("tx")
    assert (d.state, d.producer_id, d.producer_epoch, d.partitions) == (
        "Ongoing",
        pid,
        epoch,
        (TP0, TP1),
    )
    # An open transaction stays open (its producer may still commit it) until it times out.
    assert node.coord.verify_produce(pid, epoch, "t", 1) == errors.NONE
    assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.NONE
    node.restart()
    assert node.init() == (pid, epoch + 1)
    fresh, _ = node.init("other")
    assert fresh != pid


def test_list_transactions_filters(tmp_path: Path) -> None:
    node = Node(tmp_path)
    a, ea = node.init("a")
    b, _ = node.init("b")
    node.begin("a", a, ea)
    node.clock.advance(2_000)
    unknown, listing = node.coord.list_transactions()
    assert unknown == [] and [(t.transactional_id, t.state) for t in listing] == [
        ("a", "Ongoing"),
        ("b", "Empty"),
    ]
    unknown, listing = node.coord.list_transactions(["Ongoing", "Bogus"])
    assert unknown == ["Bogus"] and [t.transactional_id for t in listing] == ["a"]
    assert [t.producer_id for t in node.coord.list_transactions(producer_ids=[b])[1]] == [b]
    assert [t.transactional_id for t in node.coord.list_transactions(min_duration_ms=1_000)[1]] == [
        "a"
    ]
    assert node.coord.list_transactions(min_duration_ms=5_000)[1] == []


def test_the_transaction_log_is_compacted(tmp_path: Path) -> None:
    log = TransactionLog(tmp_path / "transactions.log", compact_min_bytes=4096)
    node = Node(tmp_path)
    node.coord.close()
    node.coord = TransactionCoordinator(
        log,
        ProducerIdManager(tmp_path / "producer-ids"),
        write_marker=lambda *a: None,
        complete_offsets=lambda *a: None,
        partition_exists=lambda t, p: True,
        clock=node.clock,
    )
    node.coord.recover()
    for _ in range(500):
        pid, epoch = node.init()
        node.begin("tx", pid, epoch)
        assert node.coord.end_txn("tx", pid, epoch, commit=True) == errors.NONE
    assert log.file_size < 3 * 4096
    log.close()
    node.restart()
    assert node.coord.describe("tx").producer_epoch == 499  # 500 inits: epochs 0-499
