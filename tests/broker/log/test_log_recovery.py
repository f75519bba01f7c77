"""Recovery on open: torn and corrupt tails, lost or damaged indexes, and real kill -9 crashes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from strom.broker.log import FlushPolicy, LogConfig, PartitionLog
from strom.kafka.protocol.records import Record, decode_records, iter_batches

MakeBatch = Callable[..., bytes]
CONFIG = LogConfig(segment_bytes=2000, index_interval_bytes=0, flush=FlushPolicy.parse("never"))


def _read_all(log: PartitionLog) -> list[Record]:
    out: list[Record] = []
    while (start := out[-1].offset + 1 if out else log.log_start_offset) < log.log_end_offset:
        out += decode_records(log.read(start, 1 << 30).read_bytes())
    return out


def _crash_image(make_batch: MakeBatch, src: Path, batches: int) -> tuple[Path, list[int]]:
    """Append ``batches`` and copy the files while the log is open: what a crash leaves behind.
    Returns the copy and the start position of each batch in the last segment."""
    log = PartitionLog(src, CONFIG)
    for i in range(batches):
        log.append(make_batch(3, tag=i, timestamp=1000 * i), now_ms=1)
    image = src.with_name(src.name + "-image")
    shutil.copytree(src, image)
    log.close()
    last = max(image.glob("*.log"))
    starts = [pos for _, pos in iter_batches(last.read_bytes())]
    return image, starts


def test_torn_tail_at_every_byte(tmp_path: Path, make_batch: MakeBatch) -> None:
    image, starts = _crash_image(make_batch, tmp_path / "t-0", 14)
    last = max(image.glob("*.log"))
    size = last.stat().st_size
    with PartitionLog(image, CONFIG) as log:
        complete = _read_all(log)
        end = log.log_end_offset
    assert end == 42
    shutil.rmtree(image / ".clean-shutdown", ignore_errors=True)
    torn_start = starts[-1]
    work = tmp_path / "work"
    for cut in range(torn_start, size):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(image, work)
        (work / ".clean-shutdown").unlink(missing_ok=True)
        os.truncate(max(work.glob("*.log")), cut)
        with PartitionLog(work, CONFIG) as log:
            assert log.log_end_offset == end - 3  # the torn batch is gone, nothing else
            assert _read_all(log) == complete[:-3]
            assert max(work.glob("*.log")).stat().st_size == torn_start
            assert log.append(make_batch(1), now_ms=1).base_offset == end - 3
        with PartitionLog(work, CONFIG) as log:  # and the repaired log reopens as it was left
            assert log.log_end_offset == end - 2


@pytest.mark.parametrize("where", ["last", "middle"])
def test_corrupt_batch_in_active_segment(tmp_path: Path, make_batch: MakeBatch, where: str) -> None:
    image, starts = _crash_image(make_batch, tmp_path / "t-0", 14)
    (image / ".clean-shutdown").unlink(missing_ok=True)
    last = max(image.glob("*.log"))
    base = int(last.stem)
    victim = len(starts) - 1 if where == "last" else len(starts) // 2
    data = bytearray(last.read_bytes())
    data[starts[victim] + 40] ^= 0x55  # inside the CRC-covered header part
    last.write_bytes(data)
    with PartitionLog(image, CONFIG) as log:
        good_end = base + 3 * victim
        assert log.log_end_offset == good_end
        records = _read_all(log)
        assert [r.offset for r in records] == list(range(good_end))
        assert log.append(make_batch(2), now_ms=1).base_offset == good_end


def test_missing_and_damaged_indexes_are_rebuilt(tmp_path: Path, make_batch: MakeBatch) -> None:
    path = tmp_path / "t-0"
    config = LogConfig(segment_bytes=3000, index_interval_bytes=150)
    with PartitionLog(path, config) as log:
        for i in range(40):
            log.append(make_batch(1 + i % 3, tag=i, timestamp=100 * i), now_ms=1)
        reads = {o: log.read(o, 700).read_bytes() for o in range(log.log_end_offset)}
        stamps = {ts: log.offset_for_timestamp(ts) for ts in range(0, 4000, 50)}
    originals = {p.name: p.read_bytes() for p in path.iterdir() if "index" in p.name}
    assert len(originals) >= 4 and any(originals.values())

    def check() -> None:
        with PartitionLog(path, config) as log:
            assert {o: log.read(o, 700).read_bytes() for o in reads} == reads
            assert {ts: log.offset_for_timestamp(ts) for ts in stamps} == stamps
        rebuilt = {p.name: p.read_bytes() for p in path.iterdir() if "index" in p.name}
        assert rebuilt == originals

    for p in path.iterdir():
        if "index" in p.name:
            p.unlink()
    check()
    # Garbage entries (decreasing, pointing past the end) and torn entries are also rebuilt.
    for name in originals:
        with open(path / name, "ab") as f:
            f.write(b"\xff\xff\xff\x00\x00\x00\x01")
    check()
    for name in originals:
        (path / name).write_bytes(b"\x00\x00\x00\x05\x7f\xff\xff\xff" * 3)
    check()


def test_clean_marker_does_not_hide_a_torn_tail(tmp_path: Path, make_batch: MakeBatch) -> None:
    path = tmp_path / "t-0"
    with PartitionLog(path, CONFIG) as log:
        for i in range(5):
            log.append(make_batch(2, tag=i), now_ms=1)
    last = max(path.glob("*.log"))
    os.truncate(last, last.stat().st_size - 7)
    assert (path / ".clean-shutdown").exists()
    with PartitionLog(path, CONFIG) as log:
        assert log.log_end_offset == 8
        assert len(_read_all(log)) == 8


def test_stray_files_are_cleaned(tmp_path: Path, make_batch: MakeBatch) -> None:
    path = tmp_path / "t-0"
    with PartitionLog(path, CONFIG) as log:
        log.append(make_batch(1), now_ms=1)
    (path / f"{500:020d}.index").write_bytes(b"\x00" * 8)  # index of a half-deleted segment
    (path / "x.tmp").write_bytes(b"partial")
    with PartitionLog(path, CONFIG) as log:
        assert log.segment_base_offsets == [0] and log.log_end_offset == 1
    assert not (path / f"{500:020d}.index").exists() and not (path / "x.tmp").exists()


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from strom.broker.log import FlushPolicy, LogConfig, PartitionLog
    from strom.kafka.protocol.records import Record, build_batch

    config = LogConfig(segment_bytes=20_000, index_interval_bytes=500,
                       flush=FlushPolicy.parse("always"))
    log = PartitionLog(Path(sys.argv[1]), config)
    i = 0
    while True:
        n, base = 1 + i % 4, log.log_end_offset
        recs = [Record(timestamp=i, value=b"<%d-%d>" % (base, j) * 20) for j in range(n)]
        result = log.append(build_batch(recs, compression="gzip" if i % 3 else "none"), i)
        print(result.base_offset, result.last_offset, flush=True)
        i += 1
    """
)


def test_kill_minus_nine_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    acked: list[tuple[int, int]] = []
    for round_no in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        lines = 0
        deadline = time.monotonic() + 20
        while lines < 150 + 100 * round_no and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            first, last = map(int, line.split())
            acked.append((first, last))
            lines += 1
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        acked += [tuple(map(int, line.split())) for line in rest.splitlines()]  # type: ignore[misc]
        assert proc.returncode == -signal.SIGKILL
        with PartitionLog(path, LogConfig(segment_bytes=20_000)) as log:
            records = _read_all(log)
            offsets = [r.offset for r in records]
            assert offsets == list(range(log.log_end_offset))  # contiguous, each exactly once
            assert log.log_end_offset >= acked[-1][1] + 1
            by_offset = {r.offset: r for r in records}
            for first, last in acked:
                for j, offset in enumerate(range(first, last + 1)):
                    value = by_offset[offset].value
                    assert value is not None and value.startswith(b"<%d-%d>" % (first, j))
