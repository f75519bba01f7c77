"""PartitionLog on real files: appends, rolling, index lookups, reads, timestamps, retention."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from strom.broker.log import (
    FlushPolicy,
    LogConfig,
    LogStorageError,
    OffsetOutOfRangeError,
    PartitionLog,
    RecordTooLargeError,
)
from strom.kafka.protocol.records import (
    CorruptRecordError,
    Record,
    build_batch,
    decode_records,
    iter_batches,
    parse_header,
)

MakeBatch = Callable[..., bytes]
SMALL = LogConfig(segment_bytes=1500, index_interval_bytes=200, flush=FlushPolicy.parse("never"))


def _fill(log: PartitionLog, make_batch: MakeBatch, batches: int, per: int = 3) -> None:
    for i in range(batches):
        r = log.append(make_batch(per, timestamp=10_000 + 100 * i, tag=i), now_ms=1)
        assert (r.base_offset, r.last_offset) == (i * per, i * per + per - 1)


def _read_all(log: PartitionLog) -> list[Record]:
    out: list[Record] = []
    while (start := out[-1].offset + 1 if out else log.log_start_offset) < log.log_end_offset:
        out += decode_records(log.read(start, 1 << 30).read_bytes())
    return out


def _offsets(data: bytes) -> list[int]:
    return [r.offset for r in decode_records(data)]


def test_round_trip_single_segment(tmp_path: Path, make_batch: MakeBatch) -> None:
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (0, 0, 0)
        batch = make_batch(5)
        r = log.append(batch, now_ms=1)
        assert (r.base_offset, r.last_offset, r.log_start_offset) == (0, 4, 0)
        assert log.log_end_offset == log.high_watermark == 5
        got = log.read(0, 1 << 20)
        data = got.read_bytes()
        assert len(data) == got.length == len(batch)
        assert data[16:] == batch[16:]  # identical bytes but the offset and leader epoch
        assert parse_header(data).partition_leader_epoch == 0
        assert _offsets(data) == [0, 1, 2, 3, 4]
        assert (got.high_watermark, got.log_start_offset) == (5, 0)
        assert os.pread(got.fd, got.length, got.position) == data  # usable for sendfile


def test_multi_batch_append_and_rolling(tmp_path: Path, make_batch: MakeBatch) -> None:
    with PartitionLog(tmp_path / "t-0", SMALL) as log:
        r = log.append(make_batch(2) + make_batch(3, tag=1), now_ms=1)
        assert (r.base_offset, r.last_offset) == (0, 4)
        for i in range(40):
            log.append(make_batch(3, tag=i), now_ms=1)
        bases = log.segment_base_offsets
        assert len(bases) > 3 and bases[0] == 0
        files = sorted(p.name for p in (tmp_path / "t-0").glob("*.log"))
        assert files == [f"{b:020d}.log" for b in bases]
        for seg_file in (tmp_path / "t-0").glob("*.log"):
            if seg_file.name != files[-1]:
                assert seg_file.stat().st_size <= SMALL.segment_bytes
        assert log.size_bytes == sum(p.stat().st_size for p in (tmp_path / "t-0").glob("*.log"))


def test_read_every_offset_and_boundaries(tmp_path: Path, make_batch: MakeBatch) -> None:
    with PartitionLog(tmp_path / "t-0", SMALL) as log:
        _fill(log, make_batch, 60)
        end = log.log_end_offset
        bases = set(log.segment_base_offsets)
        for offset in range(end):
            got = log.read(offset, 1)
            offs = _offsets(got.read_bytes())
            # Exactly the one batch that holds the offset, even though max_bytes is 1 (KIP-74).
            assert offs[0] <= offset <= offs[-1] and len(offs) == 3
            if offset in bases:
                assert got.position == 0
            big = _offsets(log.read(offset, 1 << 20).read_bytes())
            assert big[0] <= offset and big == list(range(big[0], big[-1] + 1))
            # A big read stops at its segment's end.
            seg_end = min([b for b in bases if b > offset], default=end)
            assert big[-1] == seg_end - 1
        with pytest.raises(OffsetOutOfRangeError):
            log.read(end + 1, 100)
        with pytest.raises(OffsetOutOfRangeError):
            log.read(-1, 100)
        empty = log.read(end, 100)
        assert (empty.length, empty.fd, empty.read_bytes(), empty.high_watermark) == (
            0,
            -1,
            b"",
            end,
        )


def test_max_bytes_returns_whole_batches(tmp_path: Path, make_batch: MakeBatch) -> None:
    config = LogConfig(index_interval_bytes=150)
    with PartitionLog(tmp_path / "t-0", config) as log:
        sizes = []
        for i in range(30):
            batch = make_batch(1 + i % 4, value_size=10 + 7 * i, tag=i)
            sizes.append(len(batch))
            log.append(batch, now_ms=1)
        for start in range(30):
            for max_bytes in range(0, sum(sizes) + 10, 37):
                got = log.read(sum(1 + i % 4 for i in range(start)), max_bytes)
                # The longest run of whole batches within max_bytes, and at least one batch.
                n, total = 0, 0
                while start + n < 30 and total + sizes[start + n] <= max_bytes:
                    total += sizes[start + n]
                    n += 1
                expected = max(total, sizes[start])
                assert got.length == expected, (start, max_bytes)
                assert [p for _, p in iter_batches(got.read_bytes())][-1] < got.length


def test_offset_for_timestamp(tmp_path: Path) -> None:
    with PartitionLog(tmp_path / "t-0", SMALL) as log:
        # Batch i holds records at 1000*i + 0, +10, +20 (offsets 3i..3i+2); one late batch.
        for i in range(30):
            recs = [Record(timestamp=1000 * i + 10 * j, value=b"v" * 20) for j in range(3)]
            log.append(build_batch(recs), now_ms=1)
        assert log.offset_for_timestamp(0) == (0, 0)
        assert log.offset_for_timestamp(5) == (1, 10)
        assert log.offset_for_timestamp(1000 * 17 + 11) == (3 * 17 + 2, 1000 * 17 + 20)
        assert log.offset_for_timestamp(1000 * 17 + 21) == (3 * 18, 1000 * 18)
        assert log.offset_for_timestamp(10**9) is None
        everything = _read_all(log)
        for ts in range(0, 29_021, 333):
            offset, found = log.offset_for_timestamp(ts) or (-1, -1)
            assert found >= ts and offset >= 0
            assert all(r.timestamp < ts for r in everything if r.offset < offset)
        assert log.max_timestamp_offset() == (89, 29_020)
        log.append(build_batch([Record(timestamp=5, value=b"late")]), now_ms=1)
        assert log.offset_for_timestamp(0) == (0, 0)
        assert log.max_timestamp_offset() == (89, 29_020)


def test_empty_log_lookups(tmp_path: Path) -> None:
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        assert log.offset_for_timestamp(0) is None
        assert log.max_timestamp_offset() is None
        assert log.apply_retention(10**15) == 0


def test_reopen_after_close(tmp_path: Path, make_batch: MakeBatch) -> None:
    path = tmp_path / "t-0"
    with PartitionLog(path, SMALL) as log:
        _fill(log, make_batch, 25)
        before = [log.read(o, 1 << 20).read_bytes() for o in range(log.log_end_offset)]
        bases = log.segment_base_offsets
        stamp = log.offset_for_timestamp(12_345)
    assert (path / ".clean-shutdown").exists()
    with PartitionLog(path, SMALL) as log:
        assert not (path / ".clean-shutdown").exists()
        assert log.segment_base_offsets == bases
        assert [log.read(o, 1 << 20).read_bytes() for o in range(log.log_end_offset)] == before
        assert log.offset_for_timestamp(12_345) == stamp
        assert log.append(make_batch(2), now_ms=1).base_offset == 75


def test_roll_by_time(tmp_path: Path, make_batch: MakeBatch) -> None:
    config = LogConfig(segment_ms=1000)
    with PartitionLog(tmp_path / "t-0", config) as log:
        log.append(make_batch(1), now_ms=10_000)
        log.append(make_batch(1), now_ms=10_999)
        assert log.segment_base_offsets == [0]
        log.append(make_batch(1), now_ms=11_000)
        assert log.segment_base_offsets == [0, 2]


def test_retention_by_size_and_time(tmp_path: Path, make_batch: MakeBatch) -> None:
    config = LogConfig(segment_bytes=1000, retention_bytes=2500, file_delete_delay_ms=0)
    with PartitionLog(tmp_path / "t-0", config) as log:
        _fill(log, make_batch, 40)
        segments = len(log.segment_base_offsets)
        deleted = log.apply_retention(now_ms=0)
        assert deleted > 0 and len(log.segment_base_offsets) == segments - deleted
        assert log.size_bytes >= 2500
        assert log.log_start_offset == log.segment_base_offsets[0] > 0
        assert len(list((tmp_path / "t-0").glob("*.log"))) == segments - deleted
        with pytest.raises(OffsetOutOfRangeError):
            log.read(0, 100)
        assert _offsets(log.read(log.log_start_offset, 1).read_bytes())[0] == log.log_start_offset
        r = log.append(make_batch(1), now_ms=1)
        assert r.log_start_offset == log.log_start_offset

    by_time = LogConfig(segment_bytes=1000, retention_ms=1000)
    with PartitionLog(tmp_path / "t-1", by_time) as log:
        _fill(log, make_batch, 40)  # batch i has timestamps 10_000 + 100 i .. + 2
        assert log.apply_retention(now_ms=10_000) == 0
        n = log.apply_retention(now_ms=12_000)
        assert n > 0
        kept = _read_all(log)
        # Deleted: only segments whose newest record is older than now - retention.ms; the
        # first kept segment is not entirely that old.
        assert kept[0].offset == log.log_start_offset
        first_segment = [r for r in kept if r.offset < log.segment_base_offsets[1]]
        assert max(r.timestamp for r in first_segment) >= 12_000 - 1000
        before = len(log.segment_base_offsets)
        assert log.apply_retention(now_ms=10**12) == before - 1
        assert len(log.segment_base_offsets) == 1  # the active segment is never deleted


def test_reads_stay_valid_while_retention_deletes(tmp_path: Path, make_batch: MakeBatch) -> None:
    config = LogConfig(segment_bytes=1000, retention_bytes=0, file_delete_delay_ms=60_000)
    with PartitionLog(tmp_path / "t-0", config) as log:
        _fill(log, make_batch, 20)
        region = log.read(0, 1 << 20)
        expected = region.read_bytes()
        assert log.apply_retention(now_ms=0) > 0
        assert not (tmp_path / "t-0" / f"{0:020d}.log").exists()
        assert region.read_bytes() == expected  # the fd outlives the file for sendfile


def test_record_too_large_and_corrupt(tmp_path: Path, make_batch: MakeBatch) -> None:
    config = LogConfig(max_message_bytes=300)
    with PartitionLog(tmp_path / "t-0", config) as log:
        with pytest.raises(RecordTooLargeError):
            log.append(make_batch(1, value_size=400), now_ms=1)
        bad = bytearray(make_batch(1))
        bad[-1] ^= 1
        with pytest.raises(CorruptRecordError):
            log.append(bad, now_ms=1)
        assert log.log_end_offset == 0 and log.version == 0
        log.append(make_batch(1), now_ms=1)
        assert log.log_end_offset == 1


def test_version_and_on_append(tmp_path: Path, make_batch: MakeBatch) -> None:
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        seen = []
        log.on_append.append(seen.append)
        log.on_append.append(lambda _: 1 / 0)  # a failing callback does not fail the append
        log.append(make_batch(2), now_ms=1)
        log.append(make_batch(1), now_ms=1)
        assert log.version == 2
        assert [(r.base_offset, r.last_offset) for r in seen] == [(0, 1), (2, 2)]


def test_flush_policies(tmp_path: Path, make_batch: MakeBatch) -> None:
    with PartitionLog(tmp_path / "a", LogConfig(flush=FlushPolicy.parse("always"))) as log:
        log.append(make_batch(1), now_ms=1)
        assert not log.is_dirty
    with PartitionLog(tmp_path / "b", LogConfig(flush=FlushPolicy.parse("100"))) as log:
        log.append(make_batch(1), now_ms=1_000)
        assert log.is_dirty and not log.flush_due(1_050) and log.flush_due(1_100)
        log.append(make_batch(1), now_ms=1_100)  # the interval has passed: append flushes
        assert not log.is_dirty
        log.append(make_batch(1), now_ms=1_150)
        log.flush()
        assert not log.is_dirty


def test_closed_log_refuses_calls(tmp_path: Path, make_batch: MakeBatch) -> None:
    log = PartitionLog(tmp_path / "t-0", LogConfig())
    log.close()
    log.close()
    with pytest.raises(LogStorageError):
        log.append(make_batch(1), now_ms=1)
    with pytest.raises(LogStorageError):
        log.read(0, 1)
