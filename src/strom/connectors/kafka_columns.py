"""Record batches to columns, in bulk: the kernel of strom's own Kafka fetcher.

:func:`decode_fetched` takes the ``records`` bytes of one partition of a Fetch response and
returns :class:`RecordColumns`: offsets, timestamps, keys and values as flat arrays, without a
Python object per record. Python walks the *batches* (a header parse, a CRC-32C check and, for a
compressed batch, one decompression each); a compiled numba kernel walks the *records* — the
varint layout is sequential, so vectorised numpy cannot follow it.

Values are copied once into one buffer, each followed by ``sep`` (a newline for JSON, so a run of
rows is already the NDJSON text Polars parses; nothing for raw values). Keys go to a second
buffer. Both buffers with their int64 offsets are Arrow ``LargeBinary`` arrays as they stand.

Invariants of the wire format that the kernel relies on (it checks every one and reports a
:class:`~strom.broker.protocol.records.CorruptRecordError` naming the batch otherwise): a record's
length prefix covers exactly its fields; key and value lengths are ``-1`` (null) or fit inside
the record; header keys are never null; a batch's records section holds exactly
``records_count`` records. A partial batch at the end of the input is normal (fetch responses
are cut at a byte limit) and ignored.

The kernel is compiled on first use and cached on disk (numba's ``cache=True``: beside this
module, or in the user's cache directory when site-packages is read-only; with neither
writable it is compiled anew in each process). :func:`warm_up` pays that cost up front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import crc32c
import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
from numba import njit

from strom.broker.protocol.compression import CompressionError, decompress
from strom.broker.protocol.records import (
    HEADER_SIZE,
    CorruptRecordError,
    iter_batches,
)

__all__ = ["Fetched", "RecordColumns", "decode_fetched", "empty_columns", "warm_up"]

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_CRC_START: Final = 21
_ATTR_COMPRESSION: Final = 0x07
_ATTR_LOG_APPEND_TIME: Final = 0x08
_ATTR_CONTROL: Final = 0x20
_MIN_RECORD_BYTES: Final = 7  # length, attributes, 2 deltas, key, value, header count

_ERRORS: Final = {
    1: "truncated varint",
    2: "varint too long",
    3: "invalid record length",
    4: "invalid key length",
    5: "invalid value length",
    6: "invalid header count",
    7: "invalid header key length",
    8: "invalid header value length",
    9: "record length does not match its fields",
    10: "bytes beyond the batch's records_count records",
    11: "fewer records than the batch's records_count",
}


@dataclass(frozen=True, eq=False)
class RecordColumns:
    """Records of one partition, in offset order, as flat arrays (``n`` records).

    Value ``i`` is ``values[value_offsets[i] : value_offsets[i + 1] - sep_len]``, null where
    ``value_null[i]``; keys likewise with no separator. ``timestamps`` is epoch ms, meaningful
    where ``timestamp_valid``. Headers stay encoded in ``source``: record ``i``'s header count
    and headers lie in ``source[header_spans[i, 0] : header_spans[i, 1]]`` (decoded only when
    asked for: the slow path). A slice shares every buffer.
    """

    offsets: I64
    timestamps: I64
    timestamp_valid: Bools
    values: U8
    value_offsets: I64  # n + 1 entries
    value_null: Bools
    sep_len: int
    keys: U8
    key_offsets: I64  # n + 1 entries
    key_null: Bools
    source: U8
    header_spans: I64  # n x 2

    def __len__(self) -> int:
        return len(self.offsets)

    def slice(self, start: int, stop: int) -> RecordColumns:
        return RecordColumns(
            self.offsets[start:stop],
            self.timestamps[start:stop],
            self.timestamp_valid[start:stop],
            self.values,
            self.value_offsets[start : stop + 1],
            self.value_null[start:stop],
            self.sep_len,
            self.keys,
            self.key_offsets[start : stop + 1],
            self.key_null[start:stop],
            self.source,
            self.header_spans[start:stop],
        )

    def ndjson(self) -> bytes:
        """The values joined (and ended) by ``sep``: one NDJSON document when sep is newline."""
        return self.values[self.value_offsets[0] : self.value_offsets[-1]].tobytes()

    def value_list(self) -> list[bytes | None]:
        """Values as Python objects (one per record: the slow path, for failing batches)."""
        data, vo, sep = self.values, self.value_offsets.tolist(), self.sep_len
        return [
            None if null else data[vo[i] : vo[i + 1] - sep].tobytes()
            for i, null in enumerate(self.value_null.tolist())
        ]

    def value_array(self) -> pa.Array:
        """Values as an Arrow ``LargeBinary`` array over the shared buffer (needs sep_len 0)."""
        if self.sep_len:
            raise ValueError("values carry separators; use ndjson() or value_list()")
        return _binary_array(self.values, self.value_offsets, self.value_null)

    def key_array(self) -> pa.Array:
        """Keys as an Arrow ``LargeBinary`` array over the shared buffer."""
        return _binary_array(self.keys, self.key_offsets, self.key_null)

    def timestamp_array(self) -> pa.Array:
        return _int64_array(self.timestamps, self.timestamp_valid)

    def header_lists(self) -> list[list[tuple[str, bytes | None]] | None]:
        """Each record's headers in order, None when it has none, as librdkafka reports them
        (decoded per record: the slow path)."""
        src = self.source
        return [_decode_headers(src, a, b) or None for a, b in self.header_spans.tolist()]


def _validity(null: Bools) -> pa.Buffer | None:
    if not null.any():
        return None
    return pa.py_buffer(np.packbits(~null, bitorder="little"))


def _binary_array(data: U8, offsets: I64, null: Bools) -> pa.Array:
    n = len(null)
    return pa.Array.from_buffers(
        pa.large_binary(),
        n,
        [_validity(null), pa.py_buffer(np.ascontiguousarray(offsets)), pa.py_buffer(data)],
    )


def _int64_array(values: I64, valid: Bools) -> pa.Array:
    return pa.Array.from_buffers(
        pa.int64(),
        len(values),
        [_validity(~valid), pa.py_buffer(np.ascontiguousarray(values))],
    )


def empty_columns(sep_len: int) -> RecordColumns:
    none8 = np.zeros(0, np.uint8)
    none64 = np.zeros(0, np.int64)
    nobool = np.zeros(0, np.bool_)
    zero = np.zeros(1, np.int64)
    return RecordColumns(
        none64, none64, nobool, none8, zero, nobool, sep_len, none8, zero, nobool, none8,
        np.zeros((0, 2), np.int64),
    )  # fmt: skip


@dataclass(frozen=True)
class Fetched:
    """What one partition's records section decoded to, and where fetching goes on from."""

    columns: RecordColumns
    #: The offset after the last complete batch (control batches included); ``None`` when
    #: the input held no complete batch.
    next_offset: int | None


def decode_fetched(
    records: bytes | bytearray | memoryview, *, sep: bytes = b"\n", check_crc: bool = True
) -> Fetched:
    """Decode every complete batch of ``records`` (control batches skipped; a partial tail
    ignored) into columns. Raises :class:`CorruptRecordError` on malformed data (a bad CRC
    when ``check_crc``), ``UnsupportedMagicError`` for legacy (v0/v1) message sets."""
    sep_len = len(sep)
    if sep_len > 1:
        raise ValueError("sep is one byte or none")
    buf = memoryview(records)
    plan: list[tuple[int, int, int, int, int, int, int]] = []  # start, end, count, base, ts...
    inflated: list[tuple[int, bytes]] = []  # plan index, decompressed records section
    next_offset: int | None = None
    total = 0
    for h, pos in iter_batches(buf):
        end = pos + h.size
        if check_crc and crc32c.crc32c(buf[pos + _CRC_START : end]) != h.crc:
            raise CorruptRecordError(
                f"record batch at offset {h.base_offset} fails its CRC-32C check"
            )
        next_offset = h.base_offset + h.last_offset_delta + 1
        if h.attributes & _ATTR_CONTROL or h.records_count <= 0:
            continue
        codec = h.attributes & _ATTR_COMPRESSION
        body = end - pos - HEADER_SIZE
        if codec:
            try:
                raw = decompress(codec, buf[pos + HEADER_SIZE : end])
            except CompressionError as exc:
                raise CorruptRecordError(f"batch at offset {h.base_offset}: {exc}") from exc
            inflated.append((len(plan), raw))
            body = len(raw)
        if h.records_count * _MIN_RECORD_BYTES > body:  # bounds what the kernel allocates
            raise CorruptRecordError(
                f"batch at offset {h.base_offset} claims {h.records_count} records in {body} bytes"
            )
        log_append = 1 if h.attributes & _ATTR_LOG_APPEND_TIME else 0
        plan.append(
            (pos + HEADER_SIZE, end, h.records_count, h.base_offset, h.base_timestamp,
             h.max_timestamp, log_append)
        )  # fmt: skip
        total += h.records_count
    if not plan:
        return Fetched(empty_columns(sep_len), next_offset)
    source = _source_buffer(buf, plan, inflated)
    segs = np.array(plan, dtype=np.int64)
    return Fetched(_run_kernel(source, segs, total, sep, sep_len), next_offset)


def _source_buffer(
    buf: memoryview, plan: list[tuple[int, int, int, int, int, int, int]],
    inflated: list[tuple[int, bytes]],
) -> U8:  # fmt: skip
    """The bytes the kernel walks: ``buf`` itself, or, when any batch was compressed, the
    records sections laid end to end (``plan`` rewritten to point into them)."""
    if not inflated:
        return np.frombuffer(buf, dtype=np.uint8)
    replaced = dict(inflated)
    parts: list[bytes | memoryview] = []
    at = 0
    for i, (start, end, *rest) in enumerate(plan):
        part = replaced[i] if i in replaced else buf[start:end]
        parts.append(part)
        plan[i] = (at, at + len(part), *rest)  # type: ignore[assignment]
        at += len(part)
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def _run_kernel(source: U8, segs: I64, total: int, sep: bytes, sep_len: int) -> RecordColumns:
    size = len(source)
    offsets = np.empty(total, np.int64)
    timestamps = np.empty(total, np.int64)
    values = np.empty(size + total * sep_len, np.uint8)
    value_offsets = np.empty(total + 1, np.int64)
    value_null = np.empty(total, np.bool_)
    keys = np.empty(size, np.uint8)
    key_offsets = np.empty(total + 1, np.int64)
    key_null = np.empty(total, np.bool_)
    spans = np.empty((total, 2), np.int64)
    n, code, seg, rec = _decode_segments(
        source, segs, sep[0] if sep_len else -1, offsets, timestamps, values, value_offsets,
        value_null, keys, key_offsets, key_null, spans,
    )  # fmt: skip
    if code:
        raise CorruptRecordError(
            f"batch at offset {int(segs[seg, 3])}, record {rec}: {_ERRORS.get(code, code)}"
        )
    return RecordColumns(
        offsets[:n],
        timestamps[:n],
        timestamps[:n] >= 0,  # Kafka's "no timestamp" is -1
        values,
        value_offsets[: n + 1],
        value_null[:n],
        sep_len,
        keys,
        key_offsets[: n + 1],
        key_null[:n],
        source,
        spans[:n],
    )


# -- the compiled kernel ------------------------------------------------------------------------


def _jit(fn: Callable[..., Any]) -> Any:
    """``njit`` with an on-disk cache when numba finds a writable place for one."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(nogil=True)(fn)


@_jit
def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """A zigzag varint of at most 5 bytes at ``pos``: (value, next position), or (error, -1)."""
    u = 0
    shift = 0
    for _ in range(5):
        if pos >= end:
            return 1, -1
        b = int(buf[pos])
        pos += 1
        u |= (b & 0x7F) << shift
        if b < 0x80:
            return (u >> 1) ^ -(u & 1), pos
        shift += 7
    return 2, -1


@_jit
def _varlong(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """A zigzag varint of at most 10 bytes (64 bits)."""
    u: Any = np.uint64(0)
    shift: Any = np.uint64(0)
    for _ in range(10):
        if pos >= end:
            return 1, -1
        b: Any = np.uint64(buf[pos])
        pos += 1
        u |= (b & np.uint64(0x7F)) << shift
        if b < np.uint64(0x80):
            half: Any = np.int64(u >> np.uint64(1))
            return half ^ -np.int64(u & np.uint64(1)), pos
        shift += np.uint64(7)
    return 2, -1


@_jit
def _decode_segments(
    buf: Any, segs: Any, sep: int, offsets: Any, timestamps: Any, values: Any,
    value_offsets: Any, value_null: Any, keys: Any, key_offsets: Any, key_null: Any, spans: Any,
) -> tuple[int, int, int, int]:  # fmt: skip
    """Walk the records of every segment (start, end, count, base offset, base timestamp,
    max timestamp, log-append flag); return (records, error code, segment, record)."""
    n = 0
    vpos = 0
    kpos = 0
    value_offsets[0] = 0
    key_offsets[0] = 0
    for s in range(segs.shape[0]):
        pos = segs[s, 0]
        end = segs[s, 1]
        count = segs[s, 2]
        base_offset = segs[s, 3]
        base_ts = segs[s, 4]
        max_ts = segs[s, 5]
        log_append = segs[s, 6] != 0
        for r in range(count):
            if pos >= end:
                return n, 11, s, r
            length, pos = _varint(buf, pos, end)
            if pos < 0:
                return n, length, s, r
            rec_end = pos + length
            if length < 1 or rec_end > end:
                return n, 3, s, r
            pos += 1  # attributes: unused in v2
            ts_delta, pos = _varlong(buf, pos, rec_end)
            if pos < 0:
                return n, ts_delta, s, r
            offset_delta, pos = _varint(buf, pos, rec_end)
            if pos < 0:
                return n, offset_delta, s, r
            size, pos = _varint(buf, pos, rec_end)
            if pos < 0:
                return n, size, s, r
            if size == -1:
                key_null[n] = True
            elif size < 0 or pos + size > rec_end:
                return n, 4, s, r
            else:
                key_null[n] = False
                keys[kpos : kpos + size] = buf[pos : pos + size]
                kpos += size
                pos += size
            key_offsets[n + 1] = kpos
            size, pos = _varint(buf, pos, rec_end)
            if pos < 0:
                return n, size, s, r
            if size == -1:
                value_null[n] = True
            elif size < 0 or pos + size > rec_end:
                return n, 5, s, r
            else:
                value_null[n] = False
                values[vpos : vpos + size] = buf[pos : pos + size]
                vpos += size
                pos += size
            if sep >= 0:
                values[vpos] = sep
                vpos += 1
            value_offsets[n + 1] = vpos
            spans[n, 0] = pos
            headers, pos = _varint(buf, pos, rec_end)
            if pos < 0:
                return n, headers, s, r
            if headers < 0:
                return n, 6, s, r
            for _ in range(headers):
                size, pos = _varint(buf, pos, rec_end)
                if pos < 0:
                    return n, size, s, r
                if size < 0 or pos + size > rec_end:
                    return n, 7, s, r
                pos += size
                size, pos = _varint(buf, pos, rec_end)
                if pos < 0:
                    return n, size, s, r
                if size < -1 or pos + size > rec_end:
                    return n, 8, s, r
                if size > 0:
                    pos += size
            spans[n, 1] = pos
            if pos != rec_end:
                return n, 9, s, r
            offsets[n] = base_offset + offset_delta
            timestamps[n] = max_ts if log_append else base_ts + ts_delta
            n += 1
        if pos != end:
            return n, 10, s, count
    return n, 0, 0, 0


def _decode_headers(src: U8, start: int, end: int) -> list[tuple[str, bytes | None]]:
    """Headers the kernel already validated, decoded per record (the slow path)."""
    data = src[start:end].tobytes()
    pos = 0

    def varint() -> int:
        nonlocal pos
        u = shift = 0
        while True:
            b = data[pos]
            pos += 1
            u |= (b & 0x7F) << shift
            if b < 0x80:
                return (u >> 1) ^ -(u & 1)
            shift += 7

    out: list[tuple[str, bytes | None]] = []
    for _ in range(varint()):
        size = varint()
        name = data[pos : pos + size].decode("utf-8", errors="replace")
        pos += size
        size = varint()
        value = None if size < 0 else data[pos : pos + size]
        pos += max(size, 0)
        out.append((name, value))
    return out


def warm_up() -> None:
    """Compile (or load from the cache) the kernel now rather than on the first fetch."""
    from strom.broker.protocol.records import Record, build_batch

    decode_fetched(build_batch([Record(key=b"k", value=b"{}")], timestamp_ms=0))
