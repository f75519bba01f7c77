"""Spec-driven, sans-IO codecs for Kafka messages.

A :class:`Codec` is compiled once per (message, version) from Kafka's JSON spec. ``decode`` turns
bytes into plain dicts keyed by snake_case field names; ``encode`` turns such dicts back into
bytes. Fields absent from a dict are encoded with the spec's default, so handlers build one dict
for the newest version and the codec writes only what the negotiated version carries.

``records`` fields decode to a zero-copy ``memoryview``. When encoding, a ``records`` value may be
a :class:`FileRegion`: the encoder then returns it as a separate part so the server can hand the
bytes to ``sendfile`` without reading them into Python.
"""

from __future__ import annotations

import functools
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strom.kafka.protocol.spec import FieldSpec, MessageSpec, VersionRange, load

__all__ = [
    "Codec",
    "DecodeError",
    "EncodeError",
    "FileRegion",
    "Part",
    "Reader",
    "Writer",
    "codec_for",
    "snake",
]


class DecodeError(ValueError):
    """The bytes do not form a valid message of the expected type and version."""


class EncodeError(ValueError):
    """A value cannot be encoded with the field's type."""


@dataclass(frozen=True, slots=True)
class FileRegion:
    """``length`` bytes of an open file starting at ``offset``, to be sent with ``sendfile``."""

    fd: int
    offset: int
    length: int


Part = bytes | FileRegion


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@functools.cache
def snake(name: str) -> str:
    """``ThrottleTimeMs`` -> ``throttle_time_ms``."""
    return _CAMEL.sub("_", name).lower()


_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


class Reader:
    """A cursor over a byte buffer. Every read checks bounds and raises :class:`DecodeError`."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.buf = memoryview(buf)
        self.pos = pos
        self.end = len(self.buf)

    def _fixed(self, st: struct.Struct) -> Any:
        pos = self.pos
        if pos + st.size > self.end:
            raise DecodeError("message truncated")
        self.pos = pos + st.size
        return st.unpack_from(self.buf, pos)[0]

    def int8(self) -> int:
        return int(self._fixed(_I8))

    def int16(self) -> int:
        return int(self._fixed(_I16))

    def uint16(self) -> int:
        return int(self._fixed(_U16))

    def int32(self) -> int:
        return int(self._fixed(_I32))

    def uint32(self) -> int:
        return int(self._fixed(_U32))

    def int64(self) -> int:
        return int(self._fixed(_I64))

    def float64(self) -> float:
        return float(self._fixed(_F64))

    def uvarint(self) -> int:
        result = 0
        shift = 0
        while True:
            if self.pos >= self.end:
                raise DecodeError("varint truncated")
            byte = self.buf[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise DecodeError("varint too long")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise DecodeError("message truncated")
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def remaining(self) -> int:
        return self.end - self.pos


class Writer:
    """Accumulates encoded bytes; file regions are kept as separate parts."""

    __slots__ = ("buf", "parts")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.parts: list[Part] = []

    def uvarint(self, value: int) -> None:
        if value < 0:
            raise EncodeError(f"negative unsigned varint {value}")
        while value >= 0x80:
            self.buf.append((value & 0x7F) | 0x80)
            value >>= 7
        self.buf.append(value)

    def region(self, region: FileRegion) -> None:
        if self.buf:
            self.parts.append(bytes(self.buf))
            self.buf.clear()
        self.parts.append(region)

    def finish(self) -> list[Part]:
        if self.buf or not self.parts:
            self.parts.append(bytes(self.buf))
            self.buf.clear()
        return self.parts


Decoder = Callable[[Reader], Any]
Encoder = Callable[[Writer, Any], None]


def _fixed_codec(st: struct.Struct, lo: int, hi: int) -> tuple[Decoder, Encoder]:
    def dec(r: Reader) -> Any:
        return r._fixed(st)

    def enc(w: Writer, v: Any) -> None:
        if not isinstance(v, int | float) or (isinstance(v, bool) and st is not _I8):
            raise EncodeError(f"expected a number, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise EncodeError(f"{v} out of range [{lo}, {hi}]")
        w.buf += st.pack(v)

    return dec, enc


_INTS: dict[str, tuple[struct.Struct, int, int]] = {
    "int8": (_I8, -(1 << 7), (1 << 7) - 1),
    "int16": (_I16, -(1 << 15), (1 << 15) - 1),
    "uint16": (_U16, 0, (1 << 16) - 1),
    "int32": (_I32, -(1 << 31), (1 << 31) - 1),
    "uint32": (_U32, 0, (1 << 32) - 1),
    "int64": (_I64, -(1 << 63), (1 << 63) - 1),
}


def _bool_codec() -> tuple[Decoder, Encoder]:
    def dec(r: Reader) -> Any:
        return r.int8() != 0

    def enc(w: Writer, v: Any) -> None:
        w.buf.append(1 if v else 0)

    return dec, enc


def _float_codec() -> tuple[Decoder, Encoder]:
    def dec(r: Reader) -> Any:
        return r.float64()

    def enc(w: Writer, v: Any) -> None:
        w.buf += _F64.pack(float(v))

    return dec, enc


def _uuid_codec() -> tuple[Decoder, Encoder]:
    def dec(r: Reader) -> Any:
        return bytes(r.take(16))

    def enc(w: Writer, v: Any) -> None:
        raw = v.bytes if isinstance(v, uuid.UUID) else bytes(v)
        if len(raw) != 16:
            raise EncodeError("a uuid is 16 bytes")
        w.buf += raw

    return dec, enc


def _length_codec(flexible: bool, wide: bool) -> tuple[Callable[[Reader], int], Encoder]:
    """Length prefixes: -1 means null. Compact forms store length + 1 as an unsigned varint."""
    if flexible:

        def dec(r: Reader) -> int:
            return r.uvarint() - 1

        def enc(w: Writer, n: Any) -> None:
            w.uvarint(n + 1)

        return dec, enc
    st = _I32 if wide else _I16

    def dec_fixed(r: Reader) -> int:
        return int(r._fixed(st))

    def enc_fixed(w: Writer, n: Any) -> None:
        w.buf += st.pack(n)

    return dec_fixed, enc_fixed


def _string_codec(flexible: bool, nullable: bool) -> tuple[Decoder, Encoder]:
    read_len, write_len = _length_codec(flexible, wide=False)

    def dec(r: Reader) -> Any:
        n = read_len(r)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise DecodeError("null or negative-length string where none is allowed")
        try:
            return str(r.take(n), "utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("string is not valid UTF-8") from exc

    def enc(w: Writer, v: Any) -> None:
        if v is None:
            if not nullable:
                raise EncodeError("null string where none is allowed")
            write_len(w, -1)
            return
        raw = v.encode("utf-8")
        if not flexible and len(raw) > 0x7FFF:
            raise EncodeError("string too long")
        write_len(w, len(raw))
        w.buf += raw

    return dec, enc


def _bytes_codec(flexible: bool, nullable: bool, records: bool) -> tuple[Decoder, Encoder]:
    read_len, write_len = _length_codec(flexible, wide=True)

    def dec(r: Reader) -> Any:
        n = read_len(r)
        if n < 0:
            if n == -1 and (nullable or records):
                return None
            raise DecodeError("null or negative-length bytes where none is allowed")
        view = r.take(n)
        return view if records else bytes(view)

    def enc(w: Writer, v: Any) -> None:
        if v is None:
            write_len(w, -1)
            return
        if isinstance(v, FileRegion):
            write_len(w, v.length)
            w.region(v)
            return
        write_len(w, len(v))
        w.buf += v

    return dec, enc


def _array_codec(
    elem_dec: Decoder, elem_enc: Encoder, flexible: bool, nullable: bool
) -> tuple[Decoder, Encoder]:
    read_len, write_len = _length_codec(flexible, wide=True)

    def dec(r: Reader) -> Any:
        n = read_len(r)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise DecodeError("null or negative-length array where none is allowed")
        if n > r.remaining():  # every element takes at least one byte
            raise DecodeError("array length exceeds the message")
        return [elem_dec(r) for _ in range(n)]

    def enc(w: Writer, v: Any) -> None:
        if v is None:
            if nullable:
                write_len(w, -1)
                return
            v = []
        write_len(w, len(v))
        for item in v:
            elem_enc(w, item)

    return dec, enc


def _skip_tagged(r: Reader) -> None:
    r.take(r.uvarint())


@dataclass(slots=True)
class _Compiled:
    key: str
    dec: Decoder
    enc: Encoder
    spec: FieldSpec


def _default_value(f: FieldSpec, version: int) -> Any:
    if f.is_array:
        return []
    if f.is_struct:
        return None
    return f.default


def _compile_struct(
    fields: tuple[FieldSpec, ...], version: int, flexible: bool
) -> tuple[Decoder, Encoder]:
    regular: list[_Compiled] = []
    tagged: dict[int, _Compiled] = {}
    absent: list[tuple[str, Any]] = []
    for f in fields:
        key = snake(f.name)
        if version not in f.versions:
            absent.append((key, f))
            continue
        field_flexible = flexible
        if f.flexible_override is not None:
            field_flexible = version in f.flexible_override
        dec, enc = _compile_field(f, version, field_flexible)
        compiled = _Compiled(key, dec, enc, f)
        if flexible and version in f.tagged and f.tag is not None:
            tagged[f.tag] = compiled
        else:
            regular.append(compiled)
    tagged_sorted = sorted(tagged.items())
    absent_defaults = [(key, _default_value(f, version)) for key, f in absent]

    def decode(r: Reader) -> Any:
        out: dict[str, Any] = {}
        for c in regular:
            out[c.key] = c.dec(r)
        for key, value in absent_defaults:
            out[key] = list(value) if isinstance(value, list) else value
        if flexible:
            for c in tagged.values():
                dv = _default_value(c.spec, version)
                out[c.key] = list(dv) if isinstance(dv, list) else dv
            for _ in range(r.uvarint()):
                tag = r.uvarint()
                size = r.uvarint()
                found = tagged.get(tag)
                if found is None:
                    r.take(size)
                    continue
                sub = Reader(r.take(size))
                out[found.key] = found.dec(sub)
        return out

    def encode(w: Writer, value: Any) -> None:
        if not isinstance(value, dict):
            raise EncodeError(f"expected a dict for a struct, got {type(value).__name__}")
        for c in regular:
            v = value.get(c.key, _MISSING)
            if v is _MISSING:
                fs = c.spec
                v = _default_value(fs, version)
                if v is None and fs.is_struct and not fs.is_array:
                    v = {}
            c.enc(w, v)
        if flexible:
            present = []
            for tag, c in tagged_sorted:
                v = value.get(c.key, _MISSING)
                if v is _MISSING or v is None or v == _default_value(c.spec, version):
                    continue
                sub = Writer()
                c.enc(sub, v)
                present.append((tag, b"".join(p for p in sub.finish() if isinstance(p, bytes))))
            w.uvarint(len(present))
            for tag, raw in present:
                w.uvarint(tag)
                w.uvarint(len(raw))
                w.buf += raw

    return decode, encode


_MISSING = object()


def _compile_field(f: FieldSpec, version: int, flexible: bool) -> tuple[Decoder, Encoder]:
    nullable = version in f.nullable
    if f.is_array:
        elem_dec, elem_enc = _compile_type(f, f.element_type, version, flexible, False)
        return _array_codec(elem_dec, elem_enc, flexible, nullable)
    return _compile_type(f, f.type, version, flexible, nullable)


def _compile_type(
    f: FieldSpec, typ: str, version: int, flexible: bool, nullable: bool
) -> tuple[Decoder, Encoder]:
    if typ in _INTS:
        st, lo, hi = _INTS[typ]
        return _fixed_codec(st, lo, hi)
    if typ == "bool":
        return _bool_codec()
    if typ == "float64":
        return _float_codec()
    if typ == "uuid":
        return _uuid_codec()
    if typ == "string":
        return _string_codec(flexible, nullable)
    if typ in ("bytes", "records"):
        return _bytes_codec(flexible, nullable, typ == "records")
    if f.fields:
        dec, enc = _compile_struct(f.fields, version, flexible)
        if not nullable:
            return dec, enc

        def dec_nullable(r: Reader) -> Any:
            return None if r.int8() < 0 else dec(r)

        def enc_nullable(w: Writer, v: Any) -> None:
            if v is None:
                w.buf.append(0xFF)
            else:
                w.buf.append(1)
                enc(w, v)

        return dec_nullable, enc_nullable
    raise NotImplementedError(f"field {f.name} has unsupported type {typ}")


class Codec:
    """Encoder and decoder for one message at one version."""

    __slots__ = ("_dec", "_enc", "flexible", "name", "version")

    def __init__(self, spec: MessageSpec, version: int) -> None:
        if version not in spec.valid:
            raise ValueError(f"{spec.name} has no version {version}")
        self.name = spec.name
        self.version = version
        self.flexible = version in spec.flexible
        self._dec, self._enc = _compile_struct(spec.fields, version, self.flexible)

    def decode(self, data: bytes | bytearray | memoryview | Reader) -> dict[str, Any]:
        """Decode one whole message. Trailing bytes are an error, as is anything malformed."""
        reader = data if isinstance(data, Reader) else Reader(data)
        try:
            value: dict[str, Any] = self._dec(reader)
        except (DecodeError, RecursionError):
            raise
        except (ValueError, IndexError, struct.error) as exc:
            raise DecodeError(str(exc)) from exc
        if not isinstance(data, Reader) and reader.remaining():
            raise DecodeError(f"{reader.remaining()} unexpected trailing bytes")
        return value

    def decode_prefix(self, reader: Reader) -> dict[str, Any]:
        """Decode a message at the reader's position and leave the reader after it."""
        try:
            value: dict[str, Any] = self._dec(reader)
        except DecodeError:
            raise
        except (ValueError, IndexError, struct.error) as exc:
            raise DecodeError(str(exc)) from exc
        return value

    def encode_into(self, writer: Writer, value: dict[str, Any]) -> None:
        try:
            self._enc(writer, value)
        except EncodeError:
            raise
        except (TypeError, struct.error, AttributeError) as exc:
            raise EncodeError(f"{self.name} v{self.version}: {exc}") from exc

    def encode(self, value: dict[str, Any]) -> bytes:
        """Encode to bytes; a :class:`FileRegion` value needs ``encode_parts`` instead."""
        writer = Writer()
        self.encode_into(writer, value)
        if writer.parts:
            raise EncodeError("file regions need encode_parts")
        return bytes(writer.buf)

    def encode_parts(self, value: dict[str, Any]) -> list[Part]:
        writer = Writer()
        self.encode_into(writer, value)
        return writer.finish()


@functools.cache
def codec_for(name: str, version: int) -> Codec:
    """The compiled codec for spec ``name`` (e.g. ``"FetchResponse"``) at ``version``."""
    return Codec(load(name), version)


def versions_of(name: str) -> VersionRange:
    return load(name).valid
