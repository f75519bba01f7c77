"""The compiled planner of plain record batches (``decode_fetched``'s path for a response of
many small producer requests) decodes and refuses exactly what the general path does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strom.connectors.kafka import native_records
from strom.connectors.kafka.native_records import Fetched, decode_fetched
from strom.kafka.protocol.records import (
    CorruptRecordError,
    Record,
    RecordError,
    build_batch,
    build_control_batch,
)

FIELDS = ("offsets", "timestamps", "timestamp_valid", "value_spans", "value_null", "key_spans",
          "key_null", "header_spans")  # fmt: skip


def _general(buf: bytes, monkeypatch: pytest.MonkeyPatch) -> Fetched | str:
    with monkeypatch.context() as m:
        m.setattr(native_records, "_plan_plain", lambda _buf: None)
        return _outcome(buf)


def _outcome(buf: bytes) -> Fetched | str:
    try:
        return decode_fetched(buf, aborted=[])
    except RecordError as exc:
        return f"{type(exc).__name__}: {exc}"


def _same(a: Fetched | str, b: Fetched | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    ca, cb = a.columns, b.columns
    return (
        a.next_offset == b.next_offset
        and all(np.array_equal(getattr(ca, f), getattr(cb, f)) for f in FIELDS)
        and ca.value_array().equals(cb.value_array())
        and ca.key_array().equals(cb.key_array())
    )


def _batches(sizes: list[int], start: int = 0) -> bytes:
    out = b""
    offset = start
    for i, size in enumerate(sizes):
        records = [Record(key=b"k%d" % j if j % 2 else None, value=b'{"n":%d}' % (offset + j),
                          timestamp=1_000 + offset + j) for j in range(size)]  # fmt: skip
        out += build_batch(records, base_offset=offset, timestamp_ms=900 + i)
        offset += size
    return out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(0, 400), min_size=2, max_size=12), cut=st.integers(0, 300))
def test_plain_batches_decode_as_the_general_path_does(
    monkeypatch: pytest.MonkeyPatch, sizes: list[int], cut: int
) -> None:
    sizes = [s for s in sizes if s] or [1, 1]
    buf = _batches(sizes)  # batches of 400 records pass 4 KiB: CRC-checked from Python
    for data in (buf, buf[: max(0, len(buf) - cut)]):  # a partial tail too
        assert _same(_outcome(data), _general(data, monkeypatch))


def test_faults_are_reported_as_the_general_path_reports_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small, large = _batches([3]), _batches([500], start=3)
    assert len(large) > 4096 > len(small)
    cases = {}
    for name, batch in (("small", small), ("large", large)):
        flipped = bytearray(batch)
        flipped[-3] ^= 0x10
        cases[f"crc of a {name} batch"] = bytes(flipped)
        magic = bytearray(batch)
        magic[16] = 1
        cases[f"magic of a {name} batch"] = bytes(magic)
        count = bytearray(batch)
        count[57:61] = (1 << 30).to_bytes(4, "big")
        cases[f"count of a {name} batch"] = bytes(count)
        length = bytearray(batch)
        length[8:12] = (10).to_bytes(4, "big")
        cases[f"length of a {name} batch"] = bytes(length)
    for name, bad in cases.items():
        for buf in (small + bad, bad + large, small + bad + large):
            general = _general(buf, monkeypatch)
            assert isinstance(general, str), name  # the general path refuses it ...
            assert _outcome(buf) == general, name  # ... and so does the planner, alike


def test_compressed_and_control_batches_take_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = _batches([2, 2])
    zipped = build_batch([Record(value=b"{}")], base_offset=4, compression="gzip")
    marker = build_control_batch(commit=True, base_offset=5, producer_id=1, producer_epoch=0)
    for buf in (plain + zipped, plain + marker + _batches([1], start=6)):
        got = _outcome(buf)
        assert isinstance(got, Fetched) and _same(got, _general(buf, monkeypatch))
        assert native_records._plan_plain(memoryview(buf)) is None


def test_many_batches_outgrow_the_first_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = _batches([1] * (native_records._PLAN_SLOTS * 3 + 5))
    got = native_records._plan_plain(memoryview(buf))
    assert got is not None and len(got.columns) == native_records._PLAN_SLOTS * 3 + 5
    assert _same(got, _general(buf, monkeypatch))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_garbage_anywhere_gets_the_general_paths_answer(
    monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    buf = bytearray(_batches([2, 5, 1, 3]))
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    general = _general(bytes(buf), monkeypatch)
    assert _same(_outcome(bytes(buf)), general)
    if not isinstance(general, str):
        assert len(general.columns) <= 11


def test_a_plain_stream_uses_the_planner() -> None:
    assert native_records._plan_plain(memoryview(_batches([1, 2, 3]))) is not None
    flipped = bytearray(_batches([1, 1]))
    flipped[-1] ^= 0xFF  # the second batch's last byte: its CRC fails
    with pytest.raises(CorruptRecordError, match="offset 1 fails its CRC-32C"):
        decode_fetched(bytes(flipped))
