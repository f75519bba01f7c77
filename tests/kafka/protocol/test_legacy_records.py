"""Message format v0/v1 conversion, cross-checked against kafka-python's own legacy codec.

kafka-python's ``LegacyRecordBatchBuilder`` writes message sets the way pre-0.11 clients do
(including the broken LZ4 header checksum of magic 0), and ``MemoryRecords`` reads them the way
those clients read a Fetch v0-3 answer: an independent implementation on both sides.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from strom.kafka.protocol.compression import compress
from strom.kafka.protocol.legacy_records import (
    UnsupportedCompressionError,
    _lz4_set_checksum,
    down_convert,
    is_message_set,
    up_convert,
)
from strom.kafka.protocol.records import (
    CorruptRecordError,
    Record,
    build_batch,
    build_control_batch,
    decode_batch,
    parse_header,
)

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3}
MESSAGES = [(b"k0", b"v0"), (None, b"v1"), (b"k2", None), (b"", b"x" * 300)]


def needs_old_lz4(magic: int, codec: int) -> None:
    if magic == 0 and codec == CODECS["lz4"]:
        pytest.importorskip("xxhash", reason="kafka-python's magic 0 LZ4 codec needs xxhash")


def kafka_python_message_set(magic: int, codec: int, first_offset: int = 0) -> bytes:
    needs_old_lz4(magic, codec)
    builder = LegacyRecordBatchBuilder(magic, codec, batch_size=1 << 20)
    for i, (key, value) in enumerate(MESSAGES):
        builder.append(first_offset + i, timestamp=1_700_000_000_000 + i, key=key, value=value)
    return bytes(builder.build())


def read_legacy(buf: bytes) -> list[tuple[int, int, int, bytes | None, bytes | None]]:
    """(magic, offset, timestamp, key, value) of every message, as an old client reads them."""
    out = []
    records = MemoryRecords(buf)
    while (batch := records.next_batch()) is not None:
        assert batch.validate_crc()
        for r in batch:
            out.append((batch.magic, r.offset, r.timestamp, r.key, r.value))
    return out


@pytest.mark.parametrize("magic", [0, 1])
@pytest.mark.parametrize("codec", list(CODECS))
def test_up_convert_keeps_every_message(magic: int, codec: str) -> None:
    message_set = kafka_python_message_set(magic, CODECS[codec])
    assert is_message_set(message_set)
    batch = up_convert(message_set)
    assert not is_message_set(batch)
    header = parse_header(batch)
    assert header.magic == 2
    assert header.compression == CODECS[codec]  # the producer's codec is kept
    records = decode_batch(batch)
    assert [(r.key, r.value) for r in records] == MESSAGES
    assert [r.offset for r in records] == [0, 1, 2, 3]
    expected_ts = [-1] * 4 if magic == 0 else [1_700_000_000_000 + i for i in range(4)]
    assert [r.timestamp for r in records] == expected_ts


def test_up_convert_refuses_bad_input() -> None:
    good = kafka_python_message_set(1, 0)
    broken = bytearray(good)
    broken[30] ^= 0xFF  # inside the first message, covered by its CRC-32
    with pytest.raises(CorruptRecordError, match="CRC"):
        up_convert(bytes(broken))
    with pytest.raises(CorruptRecordError, match="trailing"):
        up_convert(good + b"\x00" * 5)
    with pytest.raises(CorruptRecordError, match="size"):
        up_convert(good[:-3])
    # A compressed message inside a compressed message is not a valid message set.
    body = struct.pack(">bbq", 1, 1, 0) + struct.pack(">i", -1)
    inner = kafka_python_message_set(1, 1)
    body += struct.pack(">i", len(zlib.compress(inner))) + zlib.compress(inner)
    nested = struct.pack(">I", zlib.crc32(body)) + body
    wrapper_of_wrapper = struct.pack(">qi", 0, len(nested)) + nested
    with pytest.raises(CorruptRecordError):
        up_convert(wrapper_of_wrapper)


@pytest.mark.parametrize("magic", [0, 1])
@pytest.mark.parametrize("codec", list(CODECS))
def test_down_convert_reads_back_in_an_old_client(magic: int, codec: str) -> None:
    records = [
        Record(timestamp=1_700_000_000_000 + i, key=k, value=v) for i, (k, v) in enumerate(MESSAGES)
    ]
    records[0].headers = [("dropped", b"old formats have no headers")]
    log = build_batch(records, base_offset=10, compression=codec)
    log += build_batch([Record(timestamp=5, value=b"next")], base_offset=14, compression=codec)
    needs_old_lz4(magic, CODECS[codec])
    got = read_legacy(down_convert(log, magic, fetch_offset=10))
    ts = [1_700_000_000_000 + i for i in range(4)] + [5]
    assert got == [
        (magic, 10 + i, ts[i] if magic == 1 else None, key, value)
        for i, (key, value) in enumerate([*MESSAGES, (None, b"next")])
    ]


def test_down_convert_skips_control_batches_and_earlier_uncompressed_records() -> None:
    log = build_batch([Record(value=b"a"), Record(value=b"b"), Record(value=b"c")], base_offset=0)
    log += build_control_batch(7, 0, commit=True, base_offset=3)
    log += build_batch([Record(value=b"d"), Record(value=b"e")], base_offset=4, compression="gzip")
    got = read_legacy(down_convert(log, 1, fetch_offset=1))
    # Uncompressed: only from the fetch offset; compressed: the whole wrapper (clients skip).
    assert [(o, v) for _, o, _, _, v in got] == [(1, b"b"), (2, b"c"), (4, b"d"), (5, b"e")]


def test_down_convert_refuses_zstd() -> None:
    log = build_batch([Record(value=b"z")], compression="zstd")
    with pytest.raises(UnsupportedCompressionError, match="zstd"):
        down_convert(log, 1, fetch_offset=0)


def test_magic_0_lz4_header_checksum() -> None:
    """KAFKA-3160: magic 0 LZ4 frames checksum the magic number too. The repaired checksum is
    the one the lz4 frame format (and compression.py's pinned header) has."""
    frame = compress(CODECS["lz4"], b"payload" * 50)
    assert _lz4_set_checksum(frame, broken=False) == frame
    broken = _lz4_set_checksum(frame, broken=True)
    assert broken != frame and broken[:6] == frame[:6] and broken[7:] == frame[7:]


def test_round_trip_through_both_conversions() -> None:
    for magic in (0, 1):
        for codec in CODECS.values():
            records = [Record(timestamp=7 + i, key=k, value=v) for i, (k, v) in enumerate(MESSAGES)]
            batch = build_batch(records, compression=codec)
            if magic == 0:
                batch = up_convert(down_convert(batch, 0, fetch_offset=0))  # timestamps lost
            again = up_convert(down_convert(batch, magic, fetch_offset=0))
            assert [(r.key, r.value, r.timestamp) for r in decode_batch(again)] == [
                (r.key, r.value, r.timestamp) for r in decode_batch(batch)
            ]
