"""Record batches: header layout, validation, offsets, record encoding and every codec."""

from __future__ import annotations

import contextlib
import struct
import warnings

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strom.kafka.protocol import compression
from strom.kafka.protocol.records import (
    HEADER_SIZE,
    CorruptRecordError,
    Record,
    RecordError,
    UnsupportedMagicError,
    assign_offsets,
    build_batch,
    build_control_batch,
    complete_length,
    decode_batch,
    decode_records,
    iter_batches,
    parse_header,
    validate_produce_records,
    with_base_offset,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

records_st = st.lists(
    st.builds(
        Record,
        timestamp=st.integers(0, 2**41),
        key=st.none() | st.binary(max_size=40),
        value=st.none() | st.binary(max_size=300),
        headers=st.lists(
            st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=3
        ),
    ),
    min_size=1,
    max_size=20,
)


def test_header_fields_and_helpers() -> None:
    batch = build_batch(
        [Record(timestamp=5, value=b"a"), Record(timestamp=9, value=b"b")],
        base_offset=40,
        compression="gzip",
        producer_id=7,
        producer_epoch=2,
        base_sequence=11,
        transactional=True,
    )
    h = parse_header(batch)
    assert (h.base_offset, h.last_offset, h.records_count, h.magic) == (40, 41, 2, 2)
    assert (h.base_timestamp, h.max_timestamp) == (5, 9)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (7, 2, 11)
    assert h.size == len(batch) == 12 + h.batch_length
    assert h.compression == 1 and h.is_transactional and not h.is_control
    assert h.crc == crc32c.crc32c(batch[21:])
    assert HEADER_SIZE == 61


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=records_st, base=st.integers(0, 2**40))
def test_build_decode_round_trip(codec: str, records: list[Record], base: int) -> None:
    batch = build_batch(records, base_offset=base, compression=codec)
    [header] = validate_produce_records(batch)
    assert header.records_count == len(records)
    decoded = decode_records(batch)
    assert [r.offset for r in decoded] == list(range(base, base + len(records)))
    for got, want in zip(decoded, records, strict=True):
        assert (got.timestamp, got.key, got.value, got.headers) == (
            want.timestamp,
            want.key,
            want.value,
            want.headers,
        )
    assert validate_produce_records(batch, deep=True) == [header]


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_reads_our_batches_and_we_read_theirs(codec: str) -> None:
    with warnings.catch_warnings():  # kafka-python's import warns about importlib.resources
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    ours = build_batch(
        [
            Record(timestamp=100 + i, key=b"k", value=b"v%d" % i, headers=[("h", b"1")])
            for i in range(5)
        ],
        base_offset=3,
        compression=codec,
    )
    theirs_view = list(DefaultRecordBatch(ours))
    assert [(r.offset, r.value) for r in theirs_view] == [(3 + i, b"v%d" % i) for i in range(5)]

    codec_ids = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
    builder = DefaultRecordBatchBuilder(2, codec_ids[codec], False, -1, -1, -1, 1 << 20)
    for i in range(5):
        builder.append(i, 500 + i, b"key", b"val%d" % i, [("x", b"y")])
    theirs = bytes(builder.build())
    validate_produce_records(theirs, deep=True)
    got = decode_records(theirs)
    assert [(r.offset, r.timestamp, r.value, r.headers) for r in got] == [
        (i, 500 + i, b"val%d" % i, [("x", b"y")]) for i in range(5)
    ]


def test_codec_interop_details() -> None:
    import lz4.frame
    import snappy

    data = bytes(range(256)) * 1000
    # Our LZ4 frame header constant matches what the lz4 library writes for the same settings.
    reference = lz4.frame.compress(
        b"",
        block_size=lz4.frame.BLOCKSIZE_MAX64KB,
        block_linked=False,
        content_checksum=False,
        store_size=False,
    )
    assert compression.compress(3, b"")[:7] == reference[:7]
    assert lz4.frame.decompress(compression.compress(3, data)) == data
    assert compression.decompress(3, lz4.frame.compress(data)) == data
    # Snappy: raw blocks (librdkafka) and xerial framing (Java) both decode.
    assert compression.decompress(2, snappy.compress(data)) == data
    framed = compression.compress(2, data)
    assert framed.startswith(b"\x82SNAPPY\x00")
    assert compression.decompress(2, framed) == data
    with pytest.raises(compression.CompressionError):
        compression.decompress(
            2, b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x09ab"
        )
    with pytest.raises(compression.CompressionError):
        compression.codec_id("brotli")


def test_control_batch() -> None:
    batch = build_control_batch(5, 1, commit=True, coordinator_epoch=3, timestamp_ms=77)
    h = parse_header(batch)
    assert h.is_control and h.is_transactional and h.producer_id == 5
    with pytest.raises(CorruptRecordError):
        validate_produce_records(batch)
    assert validate_produce_records(batch, allow_control=True)[0] == h
    assert decode_records(batch) == []
    [marker] = decode_records(batch, include_control=True)
    assert marker.key == struct.pack(">hh", 0, 1)
    assert marker.value == struct.pack(">hi", 0, 3)


def test_iter_batches_stops_at_partial_tail(make_batch) -> None:
    a, b = make_batch(3), make_batch(2, tag=1)
    both = a + b
    assert [(h.records_count, pos) for h, pos in iter_batches(both)] == [(3, 0), (2, len(a))]
    for cut in range(len(a), len(both)):
        assert [pos for _, pos in iter_batches(both[:cut])] == [0]
        assert complete_length(both[:cut]) == len(a)
    assert complete_length(both) == len(both)
    assert list(iter_batches(b"")) == []
    assert len(decode_records(both[:-1])) == 3


def test_assign_offsets_in_place_and_copy(make_batch) -> None:
    buf = bytearray(make_batch(3) + make_batch(2) + make_batch(1))
    assert assign_offsets(buf, 100, leader_epoch=4) == 106
    heads = [h for h, _ in iter_batches(buf)]
    assert [h.base_offset for h in heads] == [100, 103, 105]
    assert {h.partition_leader_epoch for h in heads} == {4}
    validate_produce_records(buf)  # offsets and epoch are outside the CRC
    copy = with_base_offset(bytes(buf), 7)
    assert [r.offset for r in decode_records(copy)] == list(range(7, 13))


def test_validation_messages(make_batch) -> None:
    good = make_batch(2)
    with pytest.raises(CorruptRecordError, match="no record batches"):
        validate_produce_records(b"")
    with pytest.raises(CorruptRecordError, match="trailing"):
        validate_produce_records(good + b"\x00" * 5)
    with pytest.raises(CorruptRecordError, match="remain"):
        validate_produce_records(good[:-1])
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="CRC"):
        validate_produce_records(bad_crc)
    legacy = bytearray(good)
    legacy[16] = 1
    with pytest.raises(UnsupportedMagicError):
        validate_produce_records(legacy)
    with pytest.raises(UnsupportedMagicError):
        list(iter_batches(legacy))


def _recrc(buf: bytearray) -> bytearray:
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return buf


def test_inconsistent_counts_rejected(make_batch) -> None:
    good = bytearray(make_batch(3))
    wrong_delta = bytearray(good)
    struct.pack_into(">i", wrong_delta, 23, 5)
    with pytest.raises(CorruptRecordError, match="lastOffsetDelta"):
        validate_produce_records(_recrc(wrong_delta))
    empty = bytearray(good)
    struct.pack_into(">i", empty, 57, 0)
    with pytest.raises(CorruptRecordError, match="0 records"):
        validate_produce_records(_recrc(empty))
    codec = bytearray(good)
    struct.pack_into(">h", codec, 21, 6)
    with pytest.raises(CorruptRecordError, match="codec"):
        validate_produce_records(_recrc(codec))
    # Count says 4 but holds 3 records: only deep validation decodes and notices.
    miscounted = bytearray(good)
    struct.pack_into(">ii", miscounted, 23, 3, 0)
    struct.pack_into(">i", miscounted, 57, 4)
    validate_produce_records(_recrc(miscounted))
    with pytest.raises(CorruptRecordError):
        validate_produce_records(miscounted, deep=True)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_garbage_raises_only_record_errors(data: bytes) -> None:
    for buf in (data, b"\x00" * 8 + struct.pack(">i", len(data) + 4) + b"\x00\x00\x00\x00" + data):
        with contextlib.suppress(CorruptRecordError, UnsupportedMagicError):
            validate_produce_records(buf, deep=True)
        with contextlib.suppress(RecordError):
            decode_records(buf)


@settings(max_examples=300, deadline=None)
@given(
    codec=st.sampled_from(CODECS),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.none() | st.integers(0, 10_000),
    fix_crc=st.booleans(),
)
def test_mutated_batches_raise_only_record_errors(
    codec: str, flips: list[tuple[int, int]], cut: int | None, fix_crc: bool
) -> None:
    batch = bytearray(
        build_batch(
            [Record(timestamp=1, key=b"key", value=b"value" * 5, headers=[("a", b"b")])] * 3,
            compression=codec,
        )
    )
    for pos, xor in flips:
        batch[pos % len(batch)] ^= xor
    if cut is not None:
        batch = batch[: cut % (len(batch) + 1)]
    if fix_crc and len(batch) >= HEADER_SIZE:
        _recrc(batch)  # a valid CRC over corrupt content: only decoding can tell
    with contextlib.suppress(CorruptRecordError, UnsupportedMagicError):
        validate_produce_records(batch, deep=True)
    try:
        for _, pos in iter_batches(batch):
            decode_batch(batch, pos)
    except RecordError:
        pass
