"""A real full disk: a tiny tmpfs, appends until ENOSPC, then reads, recovery and new space."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from strom.broker.log import FlushPolicy, LogConfig, LogStorageError, PartitionLog
from strom.kafka.protocol.records import Record, decode_records

MakeBatch = Callable[..., bytes]


@pytest.fixture
def tiny_disk(tiny_tmpfs: Callable[[str], Path]) -> Path:
    return tiny_tmpfs("256k")


def _read_all(log: PartitionLog) -> list[Record]:
    out: list[Record] = []
    while (start := out[-1].offset + 1 if out else log.log_start_offset) < log.log_end_offset:
        out += decode_records(log.read(start, 1 << 30).read_bytes())
    return out


@pytest.mark.parametrize("flush", ["always", "never"])
def test_append_until_disk_full(tiny_disk: Path, make_batch: MakeBatch, flush: str) -> None:
    ballast = tiny_disk / "ballast"
    ballast.write_bytes(b"\x00" * 64 * 1024)  # freed later, to give the log room again
    config = LogConfig(
        segment_bytes=30_000, index_interval_bytes=256, flush=FlushPolicy.parse(flush)
    )
    path = tiny_disk / "t-0"
    log = PartitionLog(path, config)
    failures = 0
    appended = 0
    for i in range(1000):
        end_before, size_before = log.log_end_offset, log.size_bytes
        try:
            log.append(make_batch(4, value_size=900, tag=i), now_ms=1)
            appended += 1
        except LogStorageError as exc:
            assert isinstance(exc.__cause__, OSError)
            assert exc.__cause__.errno == errno.ENOSPC
            failures += 1
            # Nothing changed: offsets, sizes, and the files hold exactly the logged bytes.
            assert (log.log_end_offset, log.size_bytes) == (end_before, size_before)
            on_disk = sum(p.stat().st_size for p in path.glob("*.log"))
            assert on_disk == log.size_bytes
            if failures == 3:
                break
    assert appended > 10 and failures == 3
    records = _read_all(log)
    assert [r.offset for r in records] == list(range(log.log_end_offset))
    end = log.log_end_offset

    ballast.unlink()  # space returns: appends work again, at the right offset
    assert log.append(make_batch(1), now_ms=1).base_offset == end
    log.flush()
    with contextlib.suppress(LogStorageError):
        log.close()  # a clean-shutdown marker may not fit; recovery then checks the tail instead

    with PartitionLog(path, config) as reopened:
        assert reopened.log_end_offset == end + 1
        assert [r.offset for r in _read_all(reopened)] == list(range(end + 1))


@pytest.mark.parametrize("fail", ["fdatasync", "index"])
def test_injected_write_failures_leave_the_log_unchanged(
    tmp_path: Path, make_batch: MakeBatch, monkeypatch: pytest.MonkeyPatch, fail: str
) -> None:
    from strom.broker.log import index as index_module
    from strom.broker.log import segment as segment_module

    config = LogConfig(index_interval_bytes=0, flush=FlushPolicy.parse("always"))
    path = tmp_path / "t-0"
    log = PartitionLog(path, config)
    for i in range(5):
        log.append(make_batch(2, tag=i), now_ms=1)
    before = (log.log_end_offset, log.size_bytes, log.read(0, 1 << 20).read_bytes())

    def broken(*args: object) -> None:
        raise OSError(errno.EIO, "injected")

    if fail == "fdatasync":
        monkeypatch.setattr(segment_module.os, "fdatasync", broken)
    else:
        monkeypatch.setattr(index_module, "pwrite_all", broken)
    with pytest.raises(LogStorageError, match="injected"):
        log.append(make_batch(3, tag=99), now_ms=1)
    monkeypatch.undo()
    assert (log.log_end_offset, log.size_bytes, log.read(0, 1 << 20).read_bytes()) == before
    assert sum(p.stat().st_size for p in path.glob("*.log")) == log.size_bytes
    assert log.append(make_batch(1), now_ms=1).base_offset == 10
    log.close()
    with PartitionLog(path, config) as reopened:
        assert [r.offset for r in _read_all(reopened)] == list(range(11))
