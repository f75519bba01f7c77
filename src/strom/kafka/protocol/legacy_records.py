"""Kafka's message format v0 and v1 (pre-0.11 message sets), converted to and from v2 batches.

strom's log holds only v2 record batches. Clients that speak Produce v0-2 or Fetch v0-3 use the
older format, and Kafka (up to 3.9) converts for them; so does strom, here, sans-IO:

* :func:`up_convert` turns a produced message set (magic 0 or 1, compressed wrappers included)
  into one v2 batch, as Kafka's log validator does when the format differs: same keys, values
  and order; magic 1 timestamps kept, magic 0 messages get "no timestamp" (-1); the first
  compressed wrapper's codec kept for the whole batch.
* :func:`down_convert` turns v2 batches read from the log into a message set of the magic a
  Fetch version reads (0 for v0-1, 1 for v2-3), as Kafka does: control batches dropped; record
  headers, producer ids and sequences dropped (the old formats have none); an uncompressed batch
  becomes one message per record, skipping records before the fetch offset; a compressed batch
  becomes one wrapper message with the same codec holding all its records. zstd did not exist
  before v2: such a batch raises :class:`UnsupportedCompressionError`.

Layout of one message-set entry, big-endian: ``offset int64, size int32`` then the message
``crc uint32, magic int8, attributes int8, [timestamp int64 (magic 1)], key bytes, value bytes``
(bytes = int32 length, -1 for null). The CRC-32 (zlib's) covers magic to the end. Attributes:
bits 0-2 the codec, bit 3 (magic 1) log-append time. A wrapper's value is the compressed inner
message set; inner offsets are absolute in magic 0 and relative (0, 1, ...) in magic 1, and the
wrapper carries the absolute offset of its last inner message.

LZ4 in magic 0 is the pre-0.10 framing (KAFKA-3160): its frame header checksum was computed over
the magic number too. It is read with that byte repaired and written with it broken, as the
clients of that era expect.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Final

from strom.kafka.protocol.compression import CompressionError, compress, decompress
from strom.kafka.protocol.records import (
    CorruptRecordError,
    Record,
    RecordError,
    build_batch,
    decode_batch,
    iter_batches,
)

__all__ = ["UnsupportedCompressionError", "down_convert", "is_message_set", "up_convert"]

Buffer = bytes | bytearray | memoryview

_ENTRY: Final = struct.Struct(">qi")
_CRC_MAGIC_ATTR: Final = struct.Struct(">Ibb")
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")
_MAGIC_POS: Final = 16  # offset(8) + size(4) + crc(4): the same position as a v2 batch's magic
_MIN_MESSAGE: Final = 14  # crc, magic, attributes, two null lengths
_CODEC_MASK: Final = 0x07
_LOG_APPEND_TIME: Final = 0x08
_ZSTD: Final = 4
_LZ4: Final = 3
_NO_TIMESTAMP: Final = -1


class UnsupportedCompressionError(RecordError):
    """A batch uses a codec the requested message format cannot carry (zstd before v2)."""


def is_message_set(buf: Buffer) -> bool:
    """Whether ``buf`` starts with a magic 0 or 1 entry (rather than a v2 batch)."""
    return len(buf) > _MAGIC_POS and buf[_MAGIC_POS] in (0, 1)


# -- xxHash32, for the LZ4 frame header checksum -------------------------------------------------

_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
_M32: Final = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _xxh32_short(data: bytes) -> int:
    """xxHash32 with seed 0 of fewer than 16 bytes (all a frame header needs)."""
    h = (_P5 + len(data)) & _M32
    pos = 0
    while pos + 4 <= len(data):
        (word,) = struct.unpack_from("<I", data, pos)
        h = (_rotl((h + word * _P3) & _M32, 17) * _P4) & _M32
        pos += 4
    for byte in data[pos:]:
        h = (_rotl((h + byte * _P5) & _M32, 11) * _P1) & _M32
    h = ((h ^ (h >> 15)) * _P2) & _M32
    h = ((h ^ (h >> 13)) * _P3) & _M32
    return h ^ (h >> 16)


def _lz4_header_end(frame: Buffer) -> int:
    """Index of the header checksum byte: magic(4), FLG, BD, optional 8-byte content size."""
    if len(frame) < 7:
        raise CorruptRecordError("lz4 frame too short")
    return 6 + (8 if frame[4] & 0x08 else 0)


def _lz4_set_checksum(frame: Buffer, *, broken: bool) -> bytes:
    """The frame with its header checksum over the descriptor (or, broken, over magic too)."""
    out = bytearray(frame)
    end = _lz4_header_end(out)
    covered = bytes(out[0:end]) if broken else bytes(out[4:end])
    out[end] = (_xxh32_short(covered) >> 8) & 0xFF
    return bytes(out)


def _decompress(codec: int, magic: int, data: Buffer) -> bytes:
    if codec == _LZ4 and magic == 0:
        data = _lz4_set_checksum(data, broken=False)
    try:
        return decompress(codec, data)
    except CompressionError as exc:
        raise CorruptRecordError(str(exc)) from exc


def _compress(codec: int, magic: int, data: bytes) -> bytes:
    out = compress(codec, data)
    return _lz4_set_checksum(out, broken=True) if codec == _LZ4 and magic == 0 else out


# -- reading message sets ----------------------------------------------------------------------


def _read_bytes(buf: Buffer, pos: int, end: int) -> tuple[bytes | None, int]:
    if pos + 4 > end:
        raise CorruptRecordError("message truncated")
    (n,) = _I32.unpack_from(buf, pos)
    pos += 4
    if n == -1:
        return None, pos
    if n < 0 or pos + n > end:
        raise CorruptRecordError("message key or value length out of range")
    return bytes(buf[pos : pos + n]), pos + n


def _iter_messages(buf: Buffer, *, nested: bool) -> Iterator[tuple[int, int, int, Record]]:
    """Yield (offset, magic, attributes, record) of each entry; the whole of ``buf`` must be
    whole entries with correct CRCs."""
    pos, end = 0, len(buf)
    while pos < end:
        if end - pos < _ENTRY.size + _MIN_MESSAGE:
            raise CorruptRecordError(f"{end - pos} trailing bytes after the last message")
        offset, size = _ENTRY.unpack_from(buf, pos)
        start = pos + _ENTRY.size
        stop = start + size
        if size < _MIN_MESSAGE or stop > end:
            raise CorruptRecordError(f"message at position {pos} has invalid size {size}")
        crc, magic, attributes = _CRC_MAGIC_ATTR.unpack_from(buf, start)
        if magic not in (0, 1):
            raise CorruptRecordError(f"message at position {pos} has magic {magic}")
        if zlib.crc32(memoryview(buf)[start + 4 : stop]) != crc:
            raise CorruptRecordError(f"message at position {pos} fails its CRC-32 check")
        p = start + 6
        timestamp = _NO_TIMESTAMP
        if magic == 1:
            if p + 8 > stop:
                raise CorruptRecordError("message truncated")
            (timestamp,) = _I64.unpack_from(buf, p)
            p += 8
            if timestamp < _NO_TIMESTAMP:
                raise CorruptRecordError(f"message at position {pos} has timestamp {timestamp}")
        key, p = _read_bytes(buf, p, stop)
        value, p = _read_bytes(buf, p, stop)
        if p != stop:
            raise CorruptRecordError(f"message at position {pos}: size does not match its fields")
        if nested and attributes & _CODEC_MASK:
            raise CorruptRecordError("a compressed message inside a compressed message")
        yield offset, magic, attributes, Record(offset, timestamp, key, value)
        pos = stop


def up_convert(buf: Buffer) -> bytes:
    """One v2 batch (offsets from 0, CRC set) holding every message of a v0/v1 message set.

    Raises :class:`CorruptRecordError` for anything malformed (sizes, CRCs, magic, codecs) and
    ImportError when a codec's optional package is missing.
    """
    records: list[Record] = []
    codec = 0
    for _, magic, attributes, message in _iter_messages(buf, nested=False):
        wrapper_codec = attributes & _CODEC_MASK
        if not wrapper_codec:
            records.append(message)
            continue
        if wrapper_codec == _ZSTD or wrapper_codec > _ZSTD:
            raise CorruptRecordError(f"codec {wrapper_codec} in a magic {magic} message")
        if message.value is None:
            raise CorruptRecordError("a compressed message with no value")
        codec = codec or wrapper_codec
        inner = _decompress(wrapper_codec, magic, message.value)
        records.extend(m for _, _, _, m in _iter_messages(inner, nested=True))
    if not records:
        raise CorruptRecordError("no messages")
    return build_batch(records, compression=codec, timestamp_ms=_NO_TIMESTAMP)


# -- writing message sets ----------------------------------------------------------------------


def _bytes(data: bytes | None) -> bytes:
    return _I32.pack(-1) if data is None else _I32.pack(len(data)) + data


def _entry(
    offset: int, magic: int, attributes: int, timestamp: int, key: bytes | None, value: bytes | None
) -> bytes:
    body = struct.pack(">bb", magic, attributes)
    if magic == 1:
        body += _I64.pack(timestamp)
    body += _bytes(key) + _bytes(value)
    message = struct.pack(">I", zlib.crc32(body)) + body
    return _ENTRY.pack(offset, len(message)) + message


def down_convert(buf: Buffer, magic: int, fetch_offset: int) -> bytes:
    """The complete v2 batches in ``buf`` as a magic ``magic`` (0 or 1) message set.

    Raises :class:`UnsupportedCompressionError` for a zstd batch, :class:`CorruptRecordError`
    for undecodable data and ImportError when a codec's optional package is missing.
    """
    if magic not in (0, 1):
        raise ValueError(f"down-conversion is to magic 0 or 1, not {magic}")
    out = bytearray()
    for header, pos in iter_batches(buf):
        if header.is_control:
            continue
        codec = header.compression
        if codec == _ZSTD:
            raise UnsupportedCompressionError(
                f"batch at offset {header.base_offset} is zstd-compressed, which message format "
                f"v{magic} cannot carry; fetch with version 10 or later"
            )
        ts_type = _LOG_APPEND_TIME if magic == 1 and header.is_log_append_time else 0
        records = decode_batch(buf, pos)
        if not codec:
            for r in records:
                if r.offset >= fetch_offset:
                    out += _entry(r.offset, magic, ts_type, r.timestamp, r.key, r.value)
            continue
        if not records:
            continue
        last = records[-1].offset
        inner = b"".join(
            _entry(
                r.offset - records[0].offset if magic == 1 else r.offset,
                magic,
                0,
                r.timestamp,
                r.key,
                r.value,
            )
            for r in records
        )
        out += _entry(
            last, magic, codec | ts_type, header.max_timestamp, None, _compress(codec, magic, inner)
        )
    return bytes(out)
