"""Flat JSON objects straight to columns: a compiled fast path in front of Polars' NDJSON reader.

For a schema of only ``Int64``, ``Float64``, ``Boolean`` and ``String`` columns,
:func:`parse_flat` reads a chunk's values in one numba pass and builds the columns itself. It
accepts a deliberately narrow grammar, on which Polars' reader has exactly one possible answer:
each value is an object whose keys have no escapes and whose schema keys are not repeated. A
schema field's value is ``null`` or, by type: an integer of at most 18 digits (no fraction, no
exponent, no leading zero) for Int64; such an integer, or a number exact in one IEEE operation
(at most 15 significant digits, decimal exponent within 22), for Float64; ``true``/``false``
for Boolean; a printable-ASCII string without escapes for String. A key outside the schema is
skipped when its value is such a string, such an integer, ``null``, ``true`` or ``false`` (Polars
ignores it). Whitespace is space, tab or CR. Absent fields are null, as in Polars. Anything
else — an escape, a non-ASCII byte, a nested value, another number — returns ``None`` for the
whole chunk, which then goes to ``pl.read_ndjson`` (and, if that fails, to the per-record
dead-letter rules) exactly as without this module. A property test holds every frame it returns
equal to ``pl.read_ndjson`` of the same values.

Speed (bid records of Nexmark, ~250 bytes, 7 fields): about 300 ns per record on one core of
this project's machine, of which ~50 ns build the Arrow columns. Strings are scanned and copied
eight bytes per step (a word test finds the first byte that ends the fast path); each key is
first compared with the one expected after the previous field, as producers keep their order;
the helpers are inlined into the one loop; and the input is read-only (numba then compiles
without the reloads an aliased, writable input forces: 1.8x).
"""

from __future__ import annotations

import sys
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.extending import intrinsic

from strom.connectors.kafka.kernels import inline, jit
from strom.connectors.kafka.native_records import RecordColumns

__all__ = ["FlatJsonSchema", "parse_flat", "warm_up"]

_INT: Final = 0
_STRING: Final = 1
_FLOAT: Final = 2
_BOOL: Final = 3
_KINDS: Final = {pl.Int64(): _INT, pl.String(): _STRING, pl.Float64(): _FLOAT, pl.Boolean(): _BOOL}

_PLAIN = np.zeros(256, np.bool_)  # bytes of a string the kernel takes: printable ASCII but " \
_PLAIN[32:127] = True
_PLAIN[[34, 92]] = False
_NULL = np.frombuffer(b"null", np.uint8).copy()
_TRUE = np.frombuffer(b"true", np.uint8).copy()
_FALSE = np.frombuffer(b"false", np.uint8).copy()
_POW10 = np.array([10.0**e for e in range(23)])  # exact doubles
#: Address space one parse may reserve for its String columns; a larger chunk is parsed in
#: halves (a single value that still needs more goes to Polars' reader).
SCRATCH_BYTES = 1 << 30
#: Strings are scanned eight bytes per step as little-endian words (elsewhere bytewise).
_WORDS: Final = sys.byteorder == "little"


class FlatJsonSchema:
    """A schema compiled for the kernel; :meth:`of` is ``None`` for schemas it cannot parse."""

    def __init__(self, schema: pl.Schema) -> None:
        self.schema = schema
        names = [name.encode() for name in schema]
        self.name_offsets = np.zeros(len(names) + 1, np.int64)
        self.name_offsets[1:] = np.cumsum([len(b) for b in names])
        self.names = np.frombuffer(b"".join(names), np.uint8).copy()
        self.kinds = np.array([_KINDS[dtype] for dtype in schema.values()], np.int64)
        #: each String column's place among the String columns (-1 for the others)
        is_string = self.kinds == _STRING
        self.slots = np.where(is_string, np.cumsum(is_string) - 1, -1).astype(np.int64)

    @staticmethod
    def of(schema: pl.Schema) -> FlatJsonSchema | None:
        if not schema or not all(dtype in _KINDS for dtype in schema.values()):
            return None
        if not all(
            name.isascii() and name.isprintable() and '"' not in name and "\\" not in name
            for name in schema
        ):
            return None  # names are matched byte for byte: nothing that JSON would escape
        return FlatJsonSchema(schema)


def parse_flat(columns: RecordColumns, flat: FlatJsonSchema) -> pl.DataFrame | None:
    """The values as a frame of ``flat.schema``, or ``None`` when they are not all in the
    narrow grammar (see the module docstring)."""
    n = len(columns)
    k = len(flat.kinds)
    strings = int((flat.kinds == _STRING).sum())
    capacity = columns.value_bytes()
    if strings * capacity > SCRATCH_BYTES:  # many String columns of large values
        if n == 1:
            return None  # Polars' reader takes it
        half = n // 2
        head = parse_flat(columns.slice(0, half), flat)
        tail = None if head is None else parse_flat(columns.slice(half, n), flat)
        return None if head is None or tail is None else pl.concat([head, tail])
    ints = np.zeros((k, n), np.int64)
    floats = np.zeros((k, n) if _FLOAT in flat.kinds else (0, 0), np.float64)
    present = np.zeros((k, n), np.bool_)
    # String columns are copied while they are scanned, each into its own stretch of one
    # buffer; no column can need more than all the values' bytes (pages never written to are
    # never touched, so the generous size costs address space only, up to SCRATCH_BYTES).
    data = np.empty(strings * capacity, np.uint8)
    text_offsets = np.zeros((strings, n + 1), np.int64)
    ok = _parse(
        columns.source, columns.value_spans, flat.names, flat.name_offsets, flat.kinds,
        flat.slots, capacity, ints, floats, present, data, text_offsets,
    )  # fmt: skip
    if not ok:
        return None
    out: dict[str, pl.Series] = {}
    for c, name in enumerate(flat.schema):
        validity = (
            None if present[c].all() else pa.py_buffer(np.packbits(present[c], bitorder="little"))
        )
        kind = flat.kinds[c]
        if kind == _STRING:
            slot = int(flat.slots[c])
            offsets = text_offsets[slot]
            base = slot * capacity
            text = data[base : base + int(offsets[-1])]
            buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(text)]
            array = pa.Array.from_buffers(pa.large_string(), n, buffers)
        elif kind == _INT:
            array = pa.Array.from_buffers(pa.int64(), n, [validity, pa.py_buffer(ints[c])])
        elif kind == _FLOAT:
            array = pa.Array.from_buffers(pa.float64(), n, [validity, pa.py_buffer(floats[c])])
        else:
            bits = pa.py_buffer(np.packbits(ints[c] != 0, bitorder="little"))
            array = pa.Array.from_buffers(pa.bool_(), n, [validity, bits])
        out[name] = pl.Series(name, array)
    return pl.DataFrame(out)


# -- the compiled parser ---------------------------------------------------------------------


def _bytes_array(ty: Any) -> bool:
    return (
        isinstance(ty, types.Array)
        and ty.ndim == 1
        and ty.dtype == types.uint8
        and ty.layout == "C"
    )


def _word_pointer(context: Any, builder: Any, array_type: Any, array: Any, pos: Any) -> Any:
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [pos]), ir.IntType(64).as_pointer())


def _load8(typingctx: Any, array: Any, pos: Any) -> Any:
    """``_load8_word(array, pos)``: the eight bytes at ``array[pos:pos + 8]`` as one ``uint64``
    (no bounds check)."""
    if not _bytes_array(array) or not isinstance(pos, types.Integer):
        return None
    sig = types.uint64(array, types.intp)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.load(
            _word_pointer(context, builder, signature.args[0], args[0], args[1]), align=1
        )

    return sig, codegen


def _store8(typingctx: Any, array: Any, pos: Any, value: Any) -> Any:
    """``_store8_word(array, pos, value)``: write ``value`` to ``array[pos:pos + 8]`` (no bounds
    check)."""
    if not _bytes_array(array) or not isinstance(pos, types.Integer):
        return None
    sig = types.void(array, types.intp, types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        pointer = _word_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store(args[2], pointer, align=1)
        return context.get_dummy_value()

    return sig, codegen


_load8_word: Any = intrinsic(_load8)
_store8_word: Any = intrinsic(_store8)

_ONES: Final = np.uint64(0x0101010101010101)
_HIGH: Final = np.uint64(0x8080808080808080)
_SPACES: Final = np.uint64(0x2020202020202020)  # below 0x20: control characters
_QUOTES: Final = np.uint64(0x2222222222222222)
_BACKSLASHES: Final = np.uint64(0x5C5C5C5C5C5C5C5C)


@inline
def _has_unplain(x: Any) -> bool:
    """Whether the word holds a byte outside 0x20-0x7E, a ``"`` or a ``\\`` (exact: each term
    is nonzero exactly when such a byte exists; one branch for the lot)."""
    below = (x - _SPACES) & ~x  # a byte < 0x20
    above = (x + _ONES) | x  # a byte >= 0x7F
    q = x ^ _QUOTES
    quote = (q - _ONES) & ~q  # a zero byte in q: a "
    b = x ^ _BACKSLASHES
    backslash = (b - _ONES) & ~b
    return bool(((below | above | quote | backslash) & _HIGH) != 0)


@inline
def _scan_plain(buf: Any, pos: int, end: int) -> int:
    """The first position from ``pos`` on that is not a plain string byte (or ``end``):
    eight bytes per step while the words are plain."""
    if _WORDS:
        while pos + 8 <= end and not _has_unplain(_load8_word(buf, pos)):
            pos += 8
    while pos < end and _PLAIN[buf[pos]]:
        pos += 1
    return pos


@inline
def _copy_plain(buf: Any, pos: int, end: int, out: Any, at: int) -> tuple[int, int]:
    """:func:`_scan_plain` that also copies the bytes it passes to ``out[at:]``: returns the
    two new positions."""
    if _WORDS:
        while pos + 8 <= end:
            word = _load8_word(buf, pos)
            if _has_unplain(word):
                break
            _store8_word(out, at, word)
            pos += 8
            at += 8
    while pos < end and _PLAIN[buf[pos]]:
        out[at] = buf[pos]
        pos += 1
        at += 1
    return pos, at


@inline
def _space(buf: Any, pos: int, end: int) -> int:
    while pos < end and (buf[pos] == 32 or buf[pos] == 9 or buf[pos] == 13):
        pos += 1
    return pos


@inline
def _plain_string(buf: Any, pos: int, end: int) -> int:
    """The position after the closing quote of a printable-ASCII string without escapes that
    opens at ``pos``, or -1."""
    if pos >= end or buf[pos] != 34:
        return -1
    pos = _scan_plain(buf, pos + 1, end)
    if pos >= end or buf[pos] != 34:
        return -1
    return pos + 1


@inline
def _literal(buf: Any, pos: int, end: int, word: Any) -> int:
    """The position after ``word`` (null, true, false) at ``pos``, or -1."""
    size = len(word)
    if pos + size > end:
        return -1
    for j in range(size):
        if buf[pos + j] != word[j]:
            return -1
    return pos + size


@inline
def _integer(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """An integer of at most 18 digits (no leading zero, fraction or exponent) at ``pos``:
    (value, next position), or (0, -1)."""
    negative = pos < end and buf[pos] == 45
    if negative:
        pos += 1
    start = pos
    value = 0
    while pos < end and 48 <= buf[pos] <= 57:
        value = value * 10 + (int(buf[pos]) - 48)
        pos += 1
    digits = pos - start
    if digits == 0 or digits > 18 or (digits > 1 and buf[start] == 48):
        return 0, -1
    if pos < end and (buf[pos] == 46 or buf[pos] == 101 or buf[pos] == 69):
        return 0, -1  # a fraction or an exponent
    return (-value if negative else value), pos


@inline
def _float(buf: Any, pos: int, end: int) -> tuple[float, int]:
    """A JSON number at ``pos`` as the nearest double, or (0, -1). Only numbers that are
    exact in one IEEE operation (Clinger's fast path: at most 15 significant digits, a
    decimal exponent within 22) or integers of at most 18 digits; others go to Polars."""
    negative = pos < end and buf[pos] == 45
    if negative:
        pos += 1
    start = pos
    mantissa = 0
    while pos < end and 48 <= buf[pos] <= 57:
        mantissa = mantissa * 10 + (int(buf[pos]) - 48)
        pos += 1
    digits = pos - start
    if digits == 0 or digits > 18 or (digits > 1 and buf[start] == 48):
        return 0.0, -1
    exponent = 0
    exact = pos >= end or (buf[pos] != 46 and buf[pos] != 101 and buf[pos] != 69)
    if pos < end and buf[pos] == 46:  # .
        pos += 1
        fraction = pos
        while pos < end and 48 <= buf[pos] <= 57:
            mantissa = mantissa * 10 + (int(buf[pos]) - 48)
            pos += 1
        if pos == fraction:
            return 0.0, -1
        exponent -= pos - fraction
        digits += pos - fraction
        if digits > 18:
            return 0.0, -1
    if pos < end and (buf[pos] == 101 or buf[pos] == 69):  # e, E
        pos += 1
        sign = 1
        if pos < end and (buf[pos] == 43 or buf[pos] == 45):
            sign = -1 if buf[pos] == 45 else 1
            pos += 1
        e_start = pos
        e = 0
        while pos < end and 48 <= buf[pos] <= 57 and pos - e_start < 4:
            e = e * 10 + (int(buf[pos]) - 48)
            pos += 1
        if pos == e_start or (pos < end and 48 <= buf[pos] <= 57):
            return 0.0, -1
        exponent += sign * e
    if exact:
        value = float(mantissa)  # one correctly rounded conversion
    elif mantissa == 0:
        value = 0.0
    elif mantissa >= 10**15 or exponent < -22 or exponent > 22:
        return 0.0, -1
    elif exponent >= 0:
        value = float(mantissa) * _POW10[exponent]
    else:
        value = float(mantissa) / _POW10[-exponent]
    return (-value if negative else value), pos


@inline
def _skip(buf: Any, pos: int, end: int) -> int:
    """Past a value of a key outside the schema: a plain string, an integer, null, true or
    false; -1 for anything else."""
    b = buf[pos]
    if b == 34:
        return int(_plain_string(buf, pos, end))
    if b == 110:
        return int(_literal(buf, pos, end, _NULL))
    if b == 116:
        return int(_literal(buf, pos, end, _TRUE))
    if b == 102:
        return int(_literal(buf, pos, end, _FALSE))
    return int(_integer(buf, pos, end)[1])


@jit
def _parse(
    buf: Any, spans: Any, names: Any, name_offsets: Any, kinds: Any, slots: Any, capacity: int,
    ints: Any, floats: Any, present: Any, data: Any, text_offsets: Any,
) -> bool:  # fmt: skip
    """One pass over every value; False at the first thing outside the narrow grammar."""
    k = len(kinds)
    seen = np.zeros(k, np.bool_)  # keys met in the current value (present or null)
    strings = text_offsets.shape[0]
    at = np.arange(strings) * capacity  # where each string column writes next
    for i in range(spans.shape[0]):
        pos = spans[i, 0]
        end = spans[i, 1]
        pos = _space(buf, pos, end)
        if pos >= end or buf[pos] != 123:  # {
            return False
        pos = _space(buf, pos + 1, end)
        seen[:] = False
        if pos < end and buf[pos] == 125:  # {}
            pos += 1
        else:
            guess = 0  # fields usually come in the same order in every value
            while True:
                if pos >= end or buf[pos] != 34:
                    return False
                key = pos + 1
                field = -1
                if guess >= k:
                    guess = 0
                a = name_offsets[guess]
                key_len = name_offsets[guess + 1] - a
                if key + key_len < end and buf[key + key_len] == 34:  # the expected key?
                    j = 0
                    while j < key_len and names[a + j] == buf[key + j]:
                        j += 1
                    if j == key_len:
                        field = guess
                        pos = key + key_len + 1
                if field < 0:  # another key: find its end, then look it up
                    pos = _scan_plain(buf, key, end)
                    if pos >= end or buf[pos] != 34:
                        return False
                    key_len = pos - key
                    pos += 1
                for t in range(k if field < 0 else 0):
                    c = guess + t
                    if c >= k:
                        c -= k
                    a = name_offsets[c]
                    if name_offsets[c + 1] - a == key_len:
                        j = 0
                        while j < key_len and names[a + j] == buf[key + j]:
                            j += 1
                        if j == key_len:
                            field = c
                            break
                if field >= 0:
                    if seen[field]:
                        return False  # a repeated key
                    seen[field] = True
                    guess = field + 1
                pos = _space(buf, pos, end)
                if pos >= end or buf[pos] != 58:  # :
                    return False
                pos = _space(buf, pos + 1, end)
                if pos >= end:
                    return False
                kind = kinds[field] if field >= 0 else -1
                if kind < 0:
                    pos = _skip(buf, pos, end)
                elif buf[pos] == 110:  # null
                    pos = _literal(buf, pos, end, _NULL)
                elif kind == _STRING:
                    if buf[pos] != 34:
                        return False
                    slot = slots[field]
                    pos, written = _copy_plain(buf, pos + 1, end, data, at[slot])
                    at[slot] = written
                    if pos >= end or buf[pos] != 34:
                        return False
                    pos += 1
                    present[field, i] = True
                elif kind == _INT:
                    value, pos = _integer(buf, pos, end)
                    ints[field, i] = value
                    present[field, i] = pos >= 0
                elif kind == _FLOAT:
                    real, pos = _float(buf, pos, end)
                    floats[field, i] = real
                    present[field, i] = pos >= 0
                else:  # _BOOL
                    if buf[pos] == 116:
                        pos = _literal(buf, pos, end, _TRUE)
                        ints[field, i] = 1
                    else:
                        pos = _literal(buf, pos, end, _FALSE)
                    present[field, i] = pos >= 0
                if pos < 0:
                    return False
                pos = _space(buf, pos, end)
                if pos >= end:
                    return False
                if buf[pos] == 44:  # ,
                    pos = _space(buf, pos + 1, end)
                    continue
                if buf[pos] == 125:  # }
                    pos += 1
                    break
                return False
        pos = _space(buf, pos, end)
        if pos != end:
            return False
        for slot in range(strings):
            text_offsets[slot, i + 1] = at[slot] - slot * capacity
    return True


_warm = False


def warm_up() -> None:
    """Compile (or load from the cache) this parser and the record-batch kernels now, rather
    than on a source's first fetch (once a process; :class:`KafkaSource` on strom's client
    calls it when a partition is opened, so the first records do not wait for it)."""
    global _warm
    if _warm:
        return
    from strom.connectors.kafka.native_records import decode_fetched
    from strom.connectors.kafka.native_records import warm_up as warm_up_records
    from strom.kafka.protocol.records import Record, build_batch

    warm_up_records()
    flat = FlatJsonSchema.of(pl.Schema({"n": pl.Int64(), "s": pl.String()}))
    assert flat is not None
    batch = build_batch([Record(key=b"k", value=b'{"n": 1, "s": "x"}')], timestamp_ms=0)
    parse_flat(decode_fetched(batch).columns, flat)
    _warm = True
