"""Kafka record batches, magic v2 (sans-IO, bytes only).

A batch is a 61-byte header followed by its records section (compressed as a whole when the
attributes name a codec). Byte layout of the header, big-endian::

    0 baseOffset int64      12 partitionLeaderEpoch int32   21 attributes int16
    8 batchLength int32     16 magic int8                   23 lastOffsetDelta int32
                            17 crc uint32                   27 baseTimestamp int64 ...

``batchLength`` counts the bytes after itself, so a batch occupies ``12 + batchLength`` bytes. The
CRC-32C covers bytes 21 (attributes) to the end of the batch; baseOffset and partitionLeaderEpoch
lie outside it, which is what lets a broker assign offsets without recomputing checksums.

The broker path (:func:`validate_produce_records`, :func:`assign_offsets`, :func:`iter_batches`)
reads headers only. Record-level encoding (:func:`build_batch`, :func:`decode_records`) is for
clients, tools and tests.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import crc32c

from strom.kafka.protocol.compression import CompressionError, codec_id, compress, decompress

__all__ = [
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "BatchHeader",
    "ControlMarker",
    "CorruptRecordError",
    "Record",
    "RecordError",
    "UnsupportedMagicError",
    "assign_offsets",
    "batch_crc_ok",
    "build_batch",
    "build_control_batch",
    "complete_length",
    "decode_batch",
    "decode_records",
    "iter_batches",
    "parse_control_marker",
    "parse_header",
    "validate_produce_records",
    "with_base_offset",
]

Buffer = bytes | bytearray | memoryview

_HEADER: Final = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE: Final = _HEADER.size  # 61
LOG_OVERHEAD: Final = 12  # baseOffset + batchLength: the bytes not counted by batchLength
_MIN_BATCH_LENGTH: Final = HEADER_SIZE - LOG_OVERHEAD
_PREFIX: Final = struct.Struct(">qi")
_MAGIC_POS: Final = 16
_CRC_POS: Final = 17
_CRC_START: Final = 21
_LEADER_EPOCH_POS: Final = 12

ATTR_COMPRESSION_MASK: Final = 0x07
ATTR_LOG_APPEND_TIME: Final = 0x08
ATTR_TRANSACTIONAL: Final = 0x10
ATTR_CONTROL: Final = 0x20
_MAX_CODEC: Final = 4


class RecordError(ValueError):
    """Base of the errors raised for invalid record data."""


class CorruptRecordError(RecordError):
    """Record data is malformed: bad lengths, bad CRC, truncated, inconsistent counts."""


class UnsupportedMagicError(RecordError):
    """A batch uses a message format other than magic v2 (legacy v0/v1 message sets)."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The 61-byte header of a v2 record batch, field for field."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies: ``12 + batch_length``."""
        return LOG_OVERHEAD + self.batch_length

    @property
    def compression(self) -> int:
        return self.attributes & ATTR_COMPRESSION_MASK

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & ATTR_LOG_APPEND_TIME)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)


@dataclass(slots=True)
class Record:
    """One record. ``timestamp`` -1 means "unset" when building (the batch time is used)."""

    offset: int = 0
    timestamp: int = -1
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def parse_header(buf: Buffer, pos: int = 0) -> BatchHeader:
    """Parse the header at ``pos``. Checks only that 61 bytes are there, not the magic."""
    if pos < 0 or len(buf) - pos < HEADER_SIZE:
        raise CorruptRecordError(f"need {HEADER_SIZE} bytes for a batch header at position {pos}")
    return BatchHeader(*_HEADER.unpack_from(buf, pos))


def _check_prefix(buf: Buffer, pos: int, length: int) -> None:
    """Raise unless a batch at ``pos`` with ``length`` is v2 and at least header-sized."""
    if len(buf) - pos > _MAGIC_POS and buf[pos + _MAGIC_POS] != 2 and length > _MAGIC_POS - 12:
        magic = buf[pos + _MAGIC_POS]
        raise UnsupportedMagicError(
            f"record batch at position {pos} has magic {magic}; only v2 is supported"
        )
    if length < _MIN_BATCH_LENGTH:
        raise CorruptRecordError(f"record batch at position {pos} has invalid length {length}")


def iter_batches(buf: Buffer) -> Iterator[tuple[BatchHeader, int]]:
    """Yield ``(header, start position)`` of each complete batch, in order.

    Stops cleanly at a partial trailing batch (a fetch response may end with one); see
    :func:`complete_length`. Raises :class:`UnsupportedMagicError` for legacy batches and
    :class:`CorruptRecordError` for impossible lengths. CRCs are not checked.
    """
    pos, end = 0, len(buf)
    while end - pos >= LOG_OVERHEAD:
        _, length = _PREFIX.unpack_from(buf, pos)
        if length >= 0 and pos + LOG_OVERHEAD + length > end:
            return
        _check_prefix(buf, pos, length)
        header = parse_header(buf, pos)
        yield header, pos
        pos += header.size


def complete_length(buf: Buffer) -> int:
    """Bytes from the start of ``buf`` up to the end of its last complete batch."""
    end = 0
    for header, pos in iter_batches(buf):
        end = pos + header.size
    return end


def batch_crc_ok(buf: Buffer, header: BatchHeader, pos: int = 0) -> bool:
    """Whether the CRC-32C of the batch at ``pos`` (which must be complete) matches its header."""
    view = memoryview(buf)[pos + _CRC_START : pos + header.size]
    return bool(crc32c.crc32c(view) == header.crc)


def validate_produce_records(
    buf: Buffer, *, allow_control: bool = False, deep: bool = False
) -> list[BatchHeader]:
    """Validate the records a producer sent and return their batch headers.

    Invariants on success: ``buf`` is one or more complete v2 batches with no trailing bytes,
    each with a correct CRC, a known codec, ``records_count >= 1`` and
    ``last_offset_delta == records_count - 1`` (producers never send compacted batches), and no
    control batch unless ``allow_control`` (only the transaction coordinator writes markers).
    ``deep`` also decodes every record (decompressing) and checks the count and offset deltas.

    Raises only :class:`CorruptRecordError` or :class:`UnsupportedMagicError`, whatever the input.
    """
    end = len(buf)
    if end == 0:
        raise CorruptRecordError("no record batches")
    headers: list[BatchHeader] = []
    pos = 0
    while pos < end:
        if end - pos < LOG_OVERHEAD:
            raise CorruptRecordError(f"{end - pos} trailing bytes after the last batch")
        _, length = _PREFIX.unpack_from(buf, pos)
        _check_prefix(buf, pos, length)
        if pos + LOG_OVERHEAD + length > end:
            raise CorruptRecordError(
                f"batch at position {pos} needs {LOG_OVERHEAD + length} bytes, {end - pos} remain"
            )
        h = parse_header(buf, pos)
        if not batch_crc_ok(buf, h, pos):
            raise CorruptRecordError(f"batch at position {pos} fails its CRC-32C check")
        if h.compression > _MAX_CODEC:
            raise CorruptRecordError(f"batch at position {pos} has unknown codec {h.compression}")
        if h.records_count < 1:
            raise CorruptRecordError(f"batch at position {pos} has {h.records_count} records")
        if h.last_offset_delta != h.records_count - 1:
            raise CorruptRecordError(
                f"batch at position {pos}: lastOffsetDelta {h.last_offset_delta} does not match "
                f"{h.records_count} records"
            )
        if h.is_control and not allow_control:
            raise CorruptRecordError("clients may not write control batches")
        if deep:
            records = decode_batch(buf, pos)
            deltas = [r.offset - h.base_offset for r in records]
            if deltas != list(range(h.records_count)):
                raise CorruptRecordError(f"batch at position {pos}: record offsets do not match")
        headers.append(h)
        pos += h.size
    return headers


def assign_offsets(buf: bytearray, base_offset: int, *, leader_epoch: int | None = None) -> int:
    """Renumber the batches in ``buf`` in place from ``base_offset``; return the next offset.

    Each batch gets the offset after the previous batch's last offset. Neither field rewritten
    (baseOffset, optionally partitionLeaderEpoch) is covered by the CRC.
    """
    next_offset = base_offset
    for header, pos in iter_batches(buf):
        struct.pack_into(">q", buf, pos, next_offset)
        if leader_epoch is not None:
            struct.pack_into(">i", buf, pos + _LEADER_EPOCH_POS, leader_epoch)
        next_offset += header.last_offset_delta + 1
    return next_offset


def with_base_offset(buf: Buffer, base_offset: int) -> bytes:
    """A copy of ``buf`` with its batches renumbered from ``base_offset`` (see assign_offsets)."""
    out = bytearray(buf)
    assign_offsets(out, base_offset)
    return bytes(out)


# -- record-level encoding -------------------------------------------------------------------


def _write_varint(out: bytearray, value: int) -> None:
    u = (value << 1) ^ (value >> 63)  # zigzag; non-negative for any int64
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)


def _read_varint(buf: Buffer, pos: int, end: int, max_len: int = 5) -> tuple[int, int]:
    u = shift = 0
    for _ in range(max_len):
        if pos >= end:
            raise CorruptRecordError("truncated varint")
        b = buf[pos]
        pos += 1
        u |= (b & 0x7F) << shift
        if b < 0x80:
            return (u >> 1) ^ -(u & 1), pos
        shift += 7
    raise CorruptRecordError("varint too long")


def _read_nullable(buf: Buffer, pos: int, end: int) -> tuple[bytes | None, int]:
    size, pos = _read_varint(buf, pos, end)
    if size == -1:
        return None, pos
    if size < 0 or pos + size > end:
        raise CorruptRecordError(f"invalid field length {size}")
    return bytes(buf[pos : pos + size]), pos + size


def _write_nullable(out: bytearray, data: bytes | None) -> None:
    if data is None:
        _write_varint(out, -1)
    else:
        _write_varint(out, len(data))
        out += data


def _encode_record(out: bytearray, rec: Record, ts_delta: int, offset_delta: int) -> None:
    body = bytearray(b"\x00")  # record attributes: unused in v2
    _write_varint(body, ts_delta)
    _write_varint(body, offset_delta)
    _write_nullable(body, rec.key)
    _write_nullable(body, rec.value)
    _write_varint(body, len(rec.headers))
    for name, value in rec.headers:
        _write_nullable(body, name.encode())
        _write_nullable(body, value)
    _write_varint(out, len(body))
    out += body


def _decode_record(buf: Buffer, pos: int, end: int, h: BatchHeader) -> tuple[Record, int]:
    length, pos = _read_varint(buf, pos, end)
    rec_end = pos + length
    if length < 1 or rec_end > end:
        raise CorruptRecordError(f"invalid record length {length}")
    ts_delta, pos = _read_varint(buf, pos + 1, rec_end, max_len=10)
    offset_delta, pos = _read_varint(buf, pos, rec_end)
    key, pos = _read_nullable(buf, pos, rec_end)
    value, pos = _read_nullable(buf, pos, rec_end)
    count, pos = _read_varint(buf, pos, rec_end)
    if count < 0:
        raise CorruptRecordError(f"invalid header count {count}")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        name, pos = _read_nullable(buf, pos, rec_end)
        hval, pos = _read_nullable(buf, pos, rec_end)
        if name is None:
            raise CorruptRecordError("null header key")
        try:
            headers.append((name.decode(), hval))
        except UnicodeDecodeError as exc:
            raise CorruptRecordError("header key is not UTF-8") from exc
    if pos != rec_end:
        raise CorruptRecordError("record length does not match its fields")
    ts = h.max_timestamp if h.is_log_append_time else h.base_timestamp + ts_delta
    return Record(h.base_offset + offset_delta, ts, key, value, headers), pos


def decode_batch(buf: Buffer, pos: int = 0) -> list[Record]:
    """Decode every record of the complete batch at ``pos`` (decompressing as needed).

    Raises :class:`CorruptRecordError` (or :class:`UnsupportedMagicError`) on malformed data,
    and ImportError when the codec's optional package is missing. CRCs are not checked.
    """
    if len(buf) - pos < LOG_OVERHEAD:
        raise CorruptRecordError("truncated batch")
    _check_prefix(buf, pos, _PREFIX.unpack_from(buf, pos)[1])
    h = parse_header(buf, pos)
    if pos + h.size > len(buf):
        raise CorruptRecordError("truncated batch")
    data: Buffer = memoryview(buf)[pos + HEADER_SIZE : pos + h.size]
    if h.compression:
        try:
            data = decompress(h.compression, data)
        except CompressionError as exc:
            raise CorruptRecordError(str(exc)) from exc
    records: list[Record] = []
    p, end = 0, len(data)
    for _ in range(h.records_count):
        rec, p = _decode_record(data, p, end, h)
        records.append(rec)
    if p != end:
        raise CorruptRecordError(f"batch holds bytes beyond its {h.records_count} records")
    return records


def decode_records(buf: Buffer, *, include_control: bool = False) -> list[Record]:
    """Decode the records of every complete batch in ``buf`` (a partial tail is ignored).

    Control batches (transaction markers) are skipped unless ``include_control``.
    """
    out: list[Record] = []
    for header, pos in iter_batches(buf):
        if include_control or not header.is_control:
            out.extend(decode_batch(buf, pos))
    return out


def _assemble(
    records: Sequence[Record],
    *,
    base_offset: int,
    attributes: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    timestamp_ms: int | None,
    partition_leader_epoch: int,
) -> bytes:
    if not records:
        raise ValueError("a record batch needs at least one record")
    default_ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    stamps = [r.timestamp if r.timestamp >= 0 else default_ts for r in records]
    body = bytearray()
    for i, (rec, ts) in enumerate(zip(records, stamps, strict=True)):
        _encode_record(body, rec, ts - stamps[0], i)
    payload = compress(attributes & ATTR_COMPRESSION_MASK, body)
    head = _HEADER.pack(
        base_offset,
        _MIN_BATCH_LENGTH + len(payload),
        partition_leader_epoch,
        2,
        0,
        attributes,
        len(records) - 1,
        stamps[0],
        max(stamps),
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    )
    out = bytearray(head)
    out += payload
    struct.pack_into(">I", out, _CRC_POS, crc32c.crc32c(memoryview(out)[_CRC_START:]))
    return bytes(out)


def build_batch(
    records: Sequence[Record],
    base_offset: int = 0,
    compression: str | int = "none",
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    timestamp_ms: int | None = None,
    *,
    transactional: bool = False,
    partition_leader_epoch: int = -1,
) -> bytes:
    """Encode ``records`` as one v2 batch with a correct CRC.

    Offsets are assigned from ``base_offset`` in order (``Record.offset`` is ignored). Records
    with timestamp -1 get ``timestamp_ms`` (default: now). Timestamp type is CreateTime.
    """
    codec = codec_id(compression) if isinstance(compression, str) else compression
    if not 0 <= codec <= _MAX_CODEC:
        raise ValueError(f"unknown compression codec id {codec}")
    return _assemble(
        records,
        base_offset=base_offset,
        attributes=codec | (ATTR_TRANSACTIONAL if transactional else 0),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        timestamp_ms=timestamp_ms,
        partition_leader_epoch=partition_leader_epoch,
    )


def build_control_batch(
    producer_id: int,
    producer_epoch: int,
    *,
    commit: bool,
    coordinator_epoch: int = 0,
    timestamp_ms: int | None = None,
    base_offset: int = 0,
) -> bytes:
    """An end-transaction marker: one control record, key (version 0, type 1 commit / 0 abort),
    value (version 0, coordinator epoch)."""
    marker = Record(
        key=struct.pack(">hh", 0, 1 if commit else 0),
        value=struct.pack(">hi", 0, coordinator_epoch),
    )
    return _assemble(
        [marker],
        base_offset=base_offset,
        attributes=ATTR_TRANSACTIONAL | ATTR_CONTROL,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=-1,
        timestamp_ms=timestamp_ms,
        partition_leader_epoch=-1,
    )


@dataclass(frozen=True, slots=True)
class ControlMarker:
    """An end-transaction marker: the one control record of a control batch, key (int16
    version 0, int16 type: 0 abort, 1 commit), value (int16 version 0, int32 coordinator
    epoch), as Kafka's ``EndTransactionMarker`` writes it."""

    commit: bool
    coordinator_epoch: int


_MARKER_KEY: Final = struct.Struct(">hh")
_MARKER_VALUE: Final = struct.Struct(">hi")


def parse_control_marker(buf: Buffer, pos: int = 0) -> ControlMarker:
    """The marker of the complete control batch at ``pos``. Raises
    :class:`CorruptRecordError` when it holds anything else (Kafka has other control record
    types, e.g. KRaft's; none belongs in a partition log)."""
    records = decode_batch(buf, pos)
    key = records[0].key if len(records) == 1 else None
    if key is None or len(key) != _MARKER_KEY.size:
        raise CorruptRecordError("a control batch must hold one end-transaction marker record")
    version, kind = _MARKER_KEY.unpack(key)
    value = records[0].value or b""
    if version != 0 or kind not in (0, 1) or len(value) < _MARKER_VALUE.size:
        raise CorruptRecordError(f"not an end-transaction marker (version {version}, type {kind})")
    return ControlMarker(kind == 1, _MARKER_VALUE.unpack_from(value)[1])
