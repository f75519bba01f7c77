"""ProducerIdManager (producer ids) and SequenceTracker (idempotent dedup); transactional ids
are tested with the transaction coordinator (test_transactions.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.broker.coordinator import (
    ManualClock,
    ProducerIdManager,
    SequenceTracker,
    errors,
    last_sequence,
)

# -- producer ids ---------------------------------------------------------------------------


def test_idempotent_ids_are_unique_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "producer-ids"
    mgr = ProducerIdManager(path, block_size=10)
    first = [mgr.init_idempotent() for _ in range(15)]
    assert all(r.error_code == errors.NONE and r.producer_epoch == 0 for r in first)
    ids = [r.producer_id for r in first]
    assert ids == sorted(set(ids))
    # A restart (even without a clean shutdown) never hands out an id again.
    again = ProducerIdManager(path, block_size=10)
    more = [again.allocate() for _ in range(25)]
    assert not set(more) & set(ids)
    assert more == sorted(set(more))


def test_unreadable_state_stops_the_broker(tmp_path: Path) -> None:
    path = tmp_path / "producer-ids"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        ProducerIdManager(path)


# -- sequences ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    producer_id: int
    producer_epoch: int
    base_sequence: int
    last_offset_delta: int


def _append(tracker: SequenceTracker, batch: Batch, offset: int) -> None:
    assert tracker.check("t", 0, [batch]).error_code == errors.NONE
    assert tracker.check("t", 0, [batch]).duplicate_offset is None
    tracker.record("t", 0, [batch], offset)


def test_duplicates_out_of_order_and_fencing() -> None:
    tracker = SequenceTracker()
    _append(tracker, Batch(7, 0, 0, 4), 100)  # seq 0-4 at offsets 100-104
    _append(tracker, Batch(7, 0, 5, 2), 105)  # seq 5-7
    dup = tracker.check("t", 0, [Batch(7, 0, 0, 4)])
    assert (dup.error_code, dup.duplicate_offset) == (errors.NONE, 100)
    assert tracker.check("t", 0, [Batch(7, 0, 5, 2)]).duplicate_offset == 105
    gap = tracker.check("t", 0, [Batch(7, 0, 9, 0)])
    assert gap.error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER and gap.message
    overlap = tracker.check("t", 0, [Batch(7, 0, 3, 4)])
    assert overlap.error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert tracker.check("t", 0, [Batch(7, 0, 8, 0)]).error_code == errors.NONE
    # Other partitions and producers are independent; unknown producers start anywhere.
    assert tracker.check("t", 1, [Batch(7, 0, 42, 0)]).error_code == errors.NONE
    assert tracker.check("t", 0, [Batch(8, 0, 42, 0)]).error_code == errors.NONE
    # A newer epoch must restart at 0, and then fences the old one.
    assert tracker.check("t", 0, [Batch(7, 1, 8, 0)]).error_code == (
        errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    )
    _append(tracker, Batch(7, 1, 0, 0), 200)
    assert tracker.check("t", 0, [Batch(7, 0, 8, 0)]).error_code == errors.INVALID_PRODUCER_EPOCH
    assert tracker.check("t", 0, [Batch(7, 0, 0, 4)]).error_code == errors.INVALID_PRODUCER_EPOCH
    # Non-idempotent batches are not tracked.
    assert tracker.check("t", 0, [Batch(-1, -1, -1, 3)]).error_code == errors.NONE


def test_only_five_batches_are_retained() -> None:
    tracker = SequenceTracker()
    for i in range(6):
        _append(tracker, Batch(1, 0, i, 0), 10 + i)
    assert tracker.check("t", 0, [Batch(1, 0, 0, 0)]).error_code == (
        errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    )
    assert tracker.check("t", 0, [Batch(1, 0, 1, 0)]).duplicate_offset == 11


def test_sequence_wraps_around() -> None:
    top = 2**31 - 1
    assert last_sequence(top - 1, 3) == 1
    tracker = SequenceTracker()
    _append(tracker, Batch(1, 0, top - 1, 1), 0)  # top-1, top
    assert tracker.check("t", 0, [Batch(1, 0, 0, 0)]).error_code == errors.NONE
    assert tracker.check("t", 0, [Batch(1, 0, top + 1, 0)]).error_code != errors.NONE


def test_multiple_batches_in_one_request() -> None:
    tracker = SequenceTracker()
    batches = [Batch(1, 0, 0, 2), Batch(1, 0, 3, 1)]
    assert tracker.check("t", 0, batches).error_code == errors.NONE
    bad = [Batch(1, 0, 0, 2), Batch(1, 0, 4, 1)]
    assert tracker.check("t", 0, bad).error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    tracker.record("t", 0, batches, 50)
    assert tracker.check("t", 0, [Batch(1, 0, 3, 1)]).duplicate_offset == 53
    assert tracker.check("t", 0, batches).duplicate_offset == 50
    tracker.forget_topic("t")
    assert len(tracker) == 0


def test_idle_producers_expire() -> None:
    clock = ManualClock()
    tracker = SequenceTracker(clock=clock, producer_expiration_ms=1000)
    _append(tracker, Batch(1, 0, 0, 0), 0)
    clock.advance(500)
    _append(tracker, Batch(2, 0, 0, 0), 1)
    clock.advance(600)
    assert tracker.expire_idle() == 1
    assert tracker.check("t", 0, [Batch(1, 0, 9, 0)]).error_code == errors.NONE
    assert tracker.check("t", 0, [Batch(2, 0, 9, 0)]).error_code != errors.NONE


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=12),
    start=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_sequence_model(sizes: list[int], start: int, data: st.DataObject) -> None:
    """Append batches in order; a retry of any of the last five is a duplicate with its
    original offset, and any other first sequence is out of order."""
    tracker = SequenceTracker()
    seq, offset = start, 0
    appended: list[tuple[Batch, int]] = []
    for size in sizes:
        batch = Batch(3, 0, seq, size - 1)
        verdict = tracker.check("t", 0, [batch])
        assert verdict.error_code == errors.NONE and verdict.duplicate_offset is None
        tracker.record("t", 0, [batch], offset)
        appended.append((batch, offset))
        seq = (seq + size) % 2**31
        offset += size
    for batch, at in appended[-5:]:
        assert tracker.check("t", 0, [batch]).duplicate_offset == at
    first = data.draw(st.integers(0, 2**31 - 1))
    verdict = tracker.check("t", 0, [Batch(3, 0, first, 0)])
    if first == seq:
        assert verdict.error_code == errors.NONE
    elif verdict.duplicate_offset is None:
        assert verdict.error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    bumped = tracker.check("t", 0, [Batch(3, 1, 0, 0)])
    assert bumped == (errors.NONE, None, None)
