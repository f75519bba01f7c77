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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
from numba import njit

from strom.connectors.kafka_columns import RecordColumns

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


def _jit(fn: Callable[..., Any]) -> Any:
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache directory: compile in each process
        return njit(nogil=True)(fn)


class FlatJsonSchema:
    """A schema compiled for the kernel; :meth:`of` is ``None`` for schemas it cannot parse."""

    def __init__(self, schema: pl.Schema) -> None:
        self.schema = schema
        names = [name.encode() for name in schema]
        self.name_offsets = np.zeros(len(names) + 1, np.int64)
        self.name_offsets[1:] = np.cumsum([len(b) for b in names])
        self.names = np.frombuffer(b"".join(names), np.uint8).copy()
        self.kinds = np.array([_KINDS[dtype] for dtype in schema.values()], np.int64)

    @staticmethod
    def of(schema: pl.Schema) -> FlatJsonSchema | None:
        if not schema or not all(dtype in _KINDS for dtype in schema.values()):
            return None
        if not all(name.isascii() and name.isprintable() and '"' not in name for name in schema):
            return None
        return FlatJsonSchema(schema)


def parse_flat(columns: RecordColumns, flat: FlatJsonSchema) -> pl.DataFrame | None:
    """The values as a frame of ``flat.schema``, or ``None`` when they are not all in the
    narrow grammar (see the module docstring)."""
    n = len(columns)
    k = len(flat.kinds)
    ints = np.zeros((k, n), np.int64)
    floats = np.zeros((k, n) if _FLOAT in flat.kinds else (0, 0), np.float64)
    starts = np.zeros((k, n), np.int64)
    ends = np.zeros((k, n), np.int64)
    present = np.zeros((k, n), np.bool_)
    ok = _parse(
        columns.values, columns.value_offsets, columns.sep_len, flat.names, flat.name_offsets,
        flat.kinds, ints, floats, starts, ends, present,
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
            offsets = np.zeros(n + 1, np.int64)
            np.cumsum(ends[c] - starts[c], out=offsets[1:])
            data = np.empty(int(offsets[-1]), np.uint8)
            _gather(columns.values, starts[c], ends[c], data)
            buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
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


@_jit
def _gather(src: Any, starts: Any, ends: Any, out: Any) -> None:
    pos = 0
    for i in range(len(starts)):
        size = ends[i] - starts[i]
        out[pos : pos + size] = src[starts[i] : ends[i]]
        pos += size


@_jit
def _space(buf: Any, pos: int, end: int) -> int:
    while pos < end and (buf[pos] == 32 or buf[pos] == 9 or buf[pos] == 13):
        pos += 1
    return pos


@_jit
def _plain_string(buf: Any, pos: int, end: int) -> int:
    """The position after the closing quote of a printable-ASCII string without escapes that
    opens at ``pos``, or -1."""
    if pos >= end or buf[pos] != 34:
        return -1
    pos += 1
    while pos < end and _PLAIN[buf[pos]]:
        pos += 1
    if pos >= end or buf[pos] != 34:
        return -1
    return pos + 1


@_jit
def _literal(buf: Any, pos: int, end: int, word: Any) -> int:
    """The position after ``word`` (null, true, false) at ``pos``, or -1."""
    size = len(word)
    if pos + size > end:
        return -1
    for j in range(size):
        if buf[pos + j] != word[j]:
            return -1
    return pos + size


@_jit
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


@_jit
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


@_jit
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


@_jit
def _parse(
    buf: Any, offsets: Any, sep_len: int, names: Any, name_offsets: Any, kinds: Any,
    ints: Any, floats: Any, starts: Any, ends: Any, present: Any,
) -> bool:  # fmt: skip
    """One pass over every value; False at the first thing outside the narrow grammar."""
    k = len(kinds)
    seen = np.zeros(k, np.bool_)  # keys met in the current value (present or null)
    for i in range(len(offsets) - 1):
        pos = offsets[i]
        end = offsets[i + 1] - sep_len
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
                pos += 1
                key = pos
                while pos < end and _PLAIN[buf[pos]]:
                    pos += 1
                if pos >= end or buf[pos] != 34:
                    return False
                key_len = pos - key
                pos += 1
                field = -1
                for t in range(k):
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
                    start = pos + 1
                    pos = _plain_string(buf, pos, end)
                    if pos >= 0:
                        starts[field, i] = start
                        ends[field, i] = pos - 1
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
    return True


def warm_up() -> None:
    """Compile (or load from the cache) this parser and the record-batch kernel now, rather
    than on a source's first fetch."""
    from strom.broker.protocol.records import Record, build_batch
    from strom.connectors.kafka_columns import decode_fetched

    flat = FlatJsonSchema.of(pl.Schema({"n": pl.Int64(), "s": pl.String()}))
    assert flat is not None
    batch = build_batch([Record(key=b"k", value=b'{"n": 1, "s": "x"}')], timestamp_ms=0)
    parse_flat(decode_fetched(batch).columns, flat)
