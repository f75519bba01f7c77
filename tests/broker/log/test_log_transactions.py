"""PartitionLog's transaction state: LSO, markers, the aborted-transaction index across segments,
producer state, read_committed reads, and all of it after reopening and retention."""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import crc32c
import pytest
from txn_oracle import oracle, plain_batch, txn_batch

from strom.broker.log import (
    FlushPolicy,
    InvalidProducerEpochError,
    LogConfig,
    PartitionLog,
    ProducerState,
    TransactionCoordinatorFencedError,
)
from strom.broker.log.txnindex import TxnIndex
from strom.kafka.protocol.records import (
    CorruptRecordError,
    Record,
    build_batch,
    decode_records,
    iter_batches,
)

CONFIG = LogConfig(segment_bytes=600, index_interval_bytes=0, flush=FlushPolicy.parse("never"))


def _marker(log: PartitionLog, pid: int, *, commit: bool, epoch: int = 0, coord: int = 0) -> int:
    return log.append_marker(
        pid, epoch, commit=commit, coordinator_epoch=coord, now_ms=5
    ).base_offset


def _committed(log: PartitionLog, offset: int = 0) -> list[bytes]:
    """What a read_committed reader gets from ``offset``: whole batches below the LSO, minus
    those of aborted transactions (dropped with the aborted list, as clients do)."""
    out: list[bytes] = []
    while True:
        got = log.read(offset, 1 << 20, committed=True)
        if not got.length:
            return out
        assert got.end_offset <= log.last_stable_offset
        data = got.read_bytes()
        pending = sorted(log.aborted_transactions(offset, got.end_offset), key=lambda a: a[1])
        active: set[int] = set()
        for h, pos in iter_batches(data):
            while pending and pending[0][1] <= h.last_offset:
                active.add(pending.pop(0)[0])
            if h.is_control:
                active.discard(h.producer_id)
            elif not (h.is_transactional and h.producer_id in active):
                out += [r.value or b"" for r in decode_records(data[pos : pos + h.size])]
            offset = h.next_offset


def test_lso_with_interleaved_producers(tmp_path: Path) -> None:
    with PartitionLog(tmp_path / "t-0", CONFIG) as log:
        log.append(plain_batch([b"p0"]), 1)
        assert log.last_stable_offset == 1 == log.high_watermark
        a = log.append(txn_batch(1, [b"a1", b"a2"]), 1).base_offset
        b = log.append(txn_batch(2, [b"b1"]), 1).base_offset
        log.append(txn_batch(1, [b"a3"], seq=2), 1)  # same transaction: start unchanged
        log.append(plain_batch([b"p1"]), 1)
        assert (a, b, log.last_stable_offset) == (1, 3, 1)
        assert _committed(log) == [b"p0"]
        _marker(log, 1, commit=True)
        assert log.last_stable_offset == 3  # B's transaction is now the oldest
        assert _committed(log) == [b"p0", b"a1", b"a2"]
        abort = _marker(log, 2, commit=False)
        assert log.last_stable_offset == log.high_watermark
        assert log.aborted_transactions(0, log.high_watermark) == [(2, 3)]
        assert _committed(log) == [b"p0", b"a1", b"a2", b"a3", b"p1"]
        states = {s.producer_id: s for s in log.producer_states()}
        assert states[1] == ProducerState(1, 0, 2, 5, 0, -1)  # the marker's time
        assert states[2].current_txn_start_offset == -1 and abort == 7


def test_commit_abort_commit_from_one_producer(tmp_path: Path) -> None:
    """brod #659: the reader goes past every marker."""
    with PartitionLog(tmp_path / "t-0", CONFIG) as log:
        for i, commit in enumerate((True, False, True)):
            log.append(txn_batch(9, [b"v%d" % i], seq=i), 1)
            _marker(log, 9, commit=commit)
        assert log.last_stable_offset == log.high_watermark == 6
        assert log.aborted_transactions(0, 6) == [(9, 2)]
        assert _committed(log) == [b"v0", b"v2"]
        assert log.aborted_transactions(4, 6) == []  # the abort ended at 3
        assert log.aborted_transactions(3, 4) == [(9, 2)]


def test_read_committed_cuts_at_a_batch_boundary(tmp_path: Path) -> None:
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        log.append(plain_batch([b"a", b"b", b"c"]), 1)
        log.append(txn_batch(3, [b"t1", b"t2"]), 1)
        log.append(plain_batch([b"d"]), 1)
        got = log.read(0, 1 << 20, committed=True)
        assert (got.end_offset, got.last_stable_offset, got.high_watermark) == (3, 3, 6)
        assert [r.value for r in decode_records(got.read_bytes())] == [b"a", b"b", b"c"]
        assert log.read(3, 1 << 20, committed=True).length == 0  # at the LSO: nothing
        assert log.read(1, 1, committed=True).end_offset == 3  # KIP-74: the first batch whole
        assert log.read(3, 1 << 20).end_offset == 6  # read_uncommitted reads on
        _marker(log, 3, commit=False)
        assert log.read(3, 1 << 20, committed=True).end_offset == 7


def test_fetch_offset_inside_an_aborted_transaction(tmp_path: Path) -> None:
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        log.append(txn_batch(4, [b"x0", b"x1"]), 1)
        log.append(txn_batch(4, [b"x2", b"x3"], seq=2), 1)
        log.append(plain_batch([b"p"]), 1)
        _marker(log, 4, commit=False)
        # an offset in the middle of the transaction still gets it in the aborted list
        assert log.aborted_transactions(3, log.high_watermark) == [(4, 0)]
        assert _committed(log, 3) == [b"p"]
        assert log.aborted_transactions(4, 5) == [(4, 0)]  # ``p`` lies inside it too
        assert log.aborted_transactions(6, 7) == []  # past the marker


def test_marker_without_transaction_changes_nothing(tmp_path: Path) -> None:
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        log.append(txn_batch(5, [b"a"], epoch=2), 1)
        _marker(log, 5, commit=False, epoch=2, coord=1)
        before = (log.producer_states(), log.aborted_transactions(0, 99), log.last_stable_offset)
        again = _marker(log, 5, commit=False, epoch=2, coord=1)  # a coordinator's retry
        _marker(log, 77, commit=True)  # a producer never seen here
        assert again == 2 and log.high_watermark == 4
        assert before[1] == [(5, 0)]
        assert (log.producer_states(), log.aborted_transactions(0, 99)) == before[:2]
        assert log.last_stable_offset == 4


def test_stale_markers_are_refused(tmp_path: Path) -> None:
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        log.append(txn_batch(6, [b"a"], epoch=3), 1)
        _marker(log, 6, commit=True, epoch=3, coord=2)
        log.append(txn_batch(6, [b"b"], epoch=3, seq=1), 1)
        end = log.log_end_offset
        with pytest.raises(InvalidProducerEpochError, match="epoch 2"):
            _marker(log, 6, commit=False, epoch=2, coord=2)
        with pytest.raises(TransactionCoordinatorFencedError):
            _marker(log, 6, commit=False, epoch=3, coord=1)
        assert log.log_end_offset == end and log.last_stable_offset == 2
        _marker(log, 6, commit=False, epoch=4, coord=2)  # a bumped epoch aborts it
        assert log.aborted_transactions(0, 99) == [(6, 2)]
        assert log.producer_states()[0].producer_epoch == 4


def test_control_batches_must_be_markers(tmp_path: Path) -> None:
    batch = bytearray(build_batch([Record(key=b"\x00\x00\x00\x07")], producer_id=1))
    struct.pack_into(">h", batch, 21, 0x30)  # transactional + control: an unknown record type
    struct.pack_into(">I", batch, 17, crc32c.crc32c(batch[21:]))
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        with pytest.raises(CorruptRecordError, match="not an end-transaction marker"):
            log.append(bytes(batch), 1, allow_control=True)
        assert log.log_end_offset == 0


def _fill_across_segments(log: PartitionLog) -> tuple[int, int]:
    """A transaction of producer 1 opened in the first segment and aborted several segments
    later, with producer 2 committing one in between. Returns (its first offset, marker)."""
    first = log.append(txn_batch(1, [b"a-start"]), 1).base_offset
    for i in range(12):
        log.append(plain_batch([b"filler-%d" % i * 8]), 1)
        if i == 5:
            log.append(txn_batch(2, [b"b"]), 1)
            _marker(log, 2, commit=True)
    log.append(txn_batch(1, [b"a-end"], seq=1), 1)
    marker = _marker(log, 1, commit=False)
    log.append(plain_batch([b"after"]), 1)
    return first, marker


def test_aborted_index_across_segment_rolls(tmp_path: Path) -> None:
    """AutoMQ #754: a transaction whose first offset lies segments before its abort marker is
    found from any fetch offset inside it."""
    with PartitionLog(tmp_path / "t-0", CONFIG) as log:
        first, marker = _fill_across_segments(log)
        bases = log.segment_base_offsets
        assert len(bases) >= 4 and first < bases[1] and marker >= bases[-2]
        for start in range(first, marker + 1):
            assert log.aborted_transactions(start, start + 1) == [(1, first)], start
        assert log.aborted_transactions(marker + 1, log.high_watermark) == []
        expected = oracle(log)
        assert _committed(log) == expected.committed_values
        assert b"a-start" not in expected.committed_values
        assert [
            e.last_offset for e in TxnIndex(tmp_path / "t-0" / _name(marker, bases)).entries
        ] == [marker]


def _name(offset: int, bases: list[int]) -> str:
    base = max(b for b in bases if b <= offset)
    return f"{base:020d}.txnindex"


def test_clean_reopen_keeps_state(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    with PartitionLog(path, CONFIG) as log:
        first, _ = _fill_across_segments(log)
        log.append(txn_batch(3, [b"open"]), 1)  # left ongoing
        states, lso = log.producer_states(), log.last_stable_offset
        aborted = log.aborted_transactions(0, log.high_watermark)
    with PartitionLog(path, CONFIG) as log:
        assert log.producer_states() == states and log.last_stable_offset == lso
        assert log.aborted_transactions(0, log.high_watermark) == aborted == [(1, first)]
        _marker(log, 3, commit=True)
        assert log.last_stable_offset == log.high_watermark


def test_crash_image_rebuilds_state(tmp_path: Path) -> None:
    """Files copied while the log is open (what kill -9 leaves): a transaction begun in an
    old segment is still ongoing after recovery, and a lost index entry is rebuilt."""
    src, image = tmp_path / "t-0", tmp_path / "image"
    log = PartitionLog(src, CONFIG)
    log.append(txn_batch(8, [b"old-open"]), 1)
    first, marker = _fill_across_segments(log)
    shutil.copytree(src, image)
    expected_states = log.producer_states()
    log.close()
    (image / f"{max(log.segment_base_offsets):020d}.txnindex").unlink(missing_ok=True)
    for index in image.glob("*.txnindex"):
        if TxnIndex(index).entries and TxnIndex(index).entries[-1].last_offset == marker:
            index.unlink()  # the entry of the newest abort never reached the disk
    with PartitionLog(image, CONFIG) as again:
        assert again.last_stable_offset == 0  # producer 8's transaction, from segment 0
        assert again.producer_states() == expected_states
        assert again.aborted_transactions(first, first + 1) == [(1, first)]
        assert again.aborted_transactions(0, again.high_watermark) == oracle(again).overlapping(
            0, again.high_watermark
        )


def test_torn_marker_reopens_the_transaction(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = PartitionLog(path, LogConfig())
    log.append(plain_batch([b"p"]), 1)
    log.append(txn_batch(1, [b"t"]), 1)
    marker = _marker(log, 1, commit=False)
    image = tmp_path / "image"
    shutil.copytree(path, image)
    log.close()
    segment = image / f"{0:020d}.log"
    data = segment.read_bytes()
    ends = [pos for _, pos in iter_batches(data)]
    segment.write_bytes(data[: ends[-1] + 30])  # the marker is torn
    with PartitionLog(image, LogConfig()) as again:
        assert again.log_end_offset == marker
        assert again.last_stable_offset == 1
        assert again.aborted_transactions(0, marker) == []
        assert not list(image.glob("*.txnindex"))
        _marker(again, 1, commit=True)
        assert _committed(again) == [b"p", b"t"]


def test_damaged_snapshots_fall_back(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    with PartitionLog(path, CONFIG) as log:
        log.append(txn_batch(8, [b"old-open"]), 1)
        _fill_across_segments(log)
        lso, states = log.last_stable_offset, log.producer_states()
    snapshots = sorted(path.glob("*.snapshot"))
    assert 1 <= len(snapshots) <= 2
    for snap in snapshots:
        snap.write_bytes(snap.read_bytes()[:-1] + b"\x00")  # every CRC fails
    with PartitionLog(path, CONFIG) as log:  # replayed from the log start
        assert (log.last_stable_offset, log.producer_states()) == (lso, states)


def test_retention_drops_the_index_with_its_segment(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    config = LogConfig(
        segment_bytes=600, index_interval_bytes=0, retention_bytes=1, retention_ms=-1
    )
    with PartitionLog(path, config) as log:
        log.append(txn_batch(1, [b"x"]), 1)
        _marker(log, 1, commit=False)
        first_index = path / f"{0:020d}.txnindex"
        assert first_index.exists()
        for i in range(10):
            log.append(plain_batch([b"filler-%d" % i * 10]), 1)
        assert log.apply_retention(10) > 0
        assert not first_index.exists()
        assert log.aborted_transactions(log.log_start_offset, log.high_watermark) == []
        assert all(int(s.stem) >= log.log_start_offset for s in path.glob("*.snapshot"))
        start = log.log_start_offset
    with PartitionLog(path, config) as log:
        assert log.log_start_offset == start and log.last_stable_offset == log.high_watermark


def test_lso_is_never_below_the_log_start(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    config = LogConfig(segment_bytes=600, index_interval_bytes=0, retention_bytes=1)
    with PartitionLog(path, config) as log:
        log.append(txn_batch(1, [b"x"]), 1)  # never ended
        for i in range(10):
            log.append(plain_batch([b"filler-%d" % i * 10]), 1)
        log.apply_retention(10)
        assert log.last_stable_offset == log.log_start_offset > 0
        assert log.producer_states()[0].current_txn_start_offset == 0


_WRITER = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from strom.broker.log import FlushPolicy, LogConfig, PartitionLog
    from strom.kafka.protocol.records import Record, build_batch

    config = LogConfig(segment_bytes=1500, index_interval_bytes=200,
                       flush=FlushPolicy.parse("always"))
    log = PartitionLog(Path(sys.argv[1]), config)
    rng = random.Random(int(sys.argv[2]))
    while True:
        pid = rng.randrange(1, 5)
        ongoing = {s.producer_id for s in log.producer_states() if s.current_txn_start_offset >= 0}
        roll = rng.random()
        if pid in ongoing and roll < 0.4:
            log.append_marker(pid, 0, commit=roll < 0.2, coordinator_epoch=0, now_ms=1)
        else:
            values = [b"%d-%d" % (pid, rng.randrange(9999)) * 5 for _ in range(rng.randint(1, 3))]
            records = [Record(timestamp=1, value=v) for v in values]
            txn = pid != 4  # producer 4 is not transactional
            log.append(build_batch(records, producer_id=pid if txn else -1, producer_epoch=0,
                                   base_sequence=0, transactional=txn), 1)
        print(log.log_end_offset, flush=True)
    """
)


def test_kill_minus_nine_keeps_transaction_state(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    for round_no in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(round_no)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        acked = 0
        for _ in range(120 + 37 * round_no):
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        with PartitionLog(path, CONFIG) as log:
            assert log.log_end_offset >= acked > 0
            assert len(log.segment_base_offsets) > round_no + 1  # the state spans rolls
            expected = oracle(log)
            ongoing = {
                s.producer_id: s.current_txn_start_offset
                for s in log.producer_states()
                if s.current_txn_start_offset >= 0
            }
            assert ongoing == expected.ongoing
            assert log.last_stable_offset == expected.lso
            hw = log.high_watermark
            assert log.aborted_transactions(0, hw) == expected.overlapping(0, hw)
            for start in range(0, hw, 7):
                assert log.aborted_transactions(start, start + 5) == expected.overlapping(
                    start, start + 5
                )
            assert _committed(log) == expected.committed_values


def test_sequences_wrap_and_snapshot(tmp_path: Path) -> None:
    """A sequence past int32's maximum wraps to 0 (as in Kafka), so the snapshot can hold it."""
    path = tmp_path / "t-0"
    with PartitionLog(path, CONFIG) as log:
        log.append(txn_batch(2, [b"a", b"b", b"c"], seq=2**31 - 2), 1)
        for i in range(8):  # rolls: each roll writes a snapshot
            log.append(plain_batch([b"filler-%d" % i * 10]), 1)
        assert len(log.segment_base_offsets) > 1
        assert log.producer_states()[0].last_sequence == 0  # ..., max - 1, max, 0
    with PartitionLog(path, CONFIG) as log:
        assert log.producer_states()[0].last_sequence == 0  # ..., max - 1, max, 0
