"""Compression codecs of Kafka record batches (sans-IO, bytes only).

A batch's attributes bits 0-2 name the codec of its records section: 0 none, 1 gzip, 2 snappy,
3 lz4, 4 zstd. gzip uses the standard library; the others use ``cramjam``, imported lazily so that
a broker which never decompresses (the hot path never does) runs without it.

Wire-format notes, each an interoperability invariant:

* snappy: Java clients write xerial's framing (a 16-byte header then ``[int32 length][raw snappy
  block]`` chunks); librdkafka writes one raw snappy block. :func:`decompress` accepts both;
  :func:`compress` writes xerial framing, which every Kafka client reads.
* lz4: the LZ4 *frame* format (Kafka >= 0.10). :func:`compress` writes the frame Kafka's Java
  client writes: independent 64 KiB blocks, no block or content checksum, no content size.
* zstd: standard zstd frames; the content size may be absent (streaming producers omit it).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from types import ModuleType
from typing import Final

__all__ = [
    "CODEC_IDS",
    "CODEC_NAMES",
    "CompressionError",
    "codec_id",
    "compress",
    "decompress",
]

CODEC_NAMES: Final[dict[int, str]] = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
CODEC_IDS: Final[dict[str, int]] = {name: cid for cid, name in CODEC_NAMES.items()}

_INSTALL_HINT = "pip install 'strom[compression]'"

# xerial snappy-java stream header: magic, then int32 version 1 and int32 compatible-version 1.
_XERIAL_MAGIC: Final = b"\x82SNAPPY\x00"
_XERIAL_HEADER: Final = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK: Final = 32 * 1024

# LZ4 frame: magic, FLG 0x60 (version 01, independent blocks, no checksums, no content size),
# BD 0x40 (64 KiB max block), and the header checksum byte, which is fixed by FLG and BD
# (second byte of xxh32 of the two descriptor bytes); a test pins it against the lz4 package.
_LZ4_HEADER: Final = b"\x04\x22\x4d\x18\x60\x40\x82"
_LZ4_BLOCK: Final = 64 * 1024
_LZ4_UNCOMPRESSED_FLAG: Final = 0x80000000
_LZ4_END_MARK: Final = b"\x00\x00\x00\x00"


class CompressionError(ValueError):
    """The data cannot be (de)compressed with the named codec, or the codec id is unknown."""


def codec_id(name: str) -> int:
    """The attributes codec id of ``name`` (``none``, ``gzip``, ``snappy``, ``lz4``, ``zstd``)."""
    try:
        return CODEC_IDS[name.lower()]
    except KeyError:
        raise CompressionError(f"unknown compression codec {name!r}") from None


def _cramjam() -> ModuleType:
    try:
        import cramjam
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f'snappy, lz4 and zstd record batches need the cramjam package: run "{_INSTALL_HINT}"'
        ) from exc
    return cramjam


def compress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """Compress ``data`` as Kafka clients do for codec id ``codec`` (0 returns a copy)."""
    if codec == 0:
        return bytes(data)
    if codec == 1:
        return gzip.compress(data, compresslevel=6)
    if codec == 2:
        return _xerial_compress(bytes(data))
    if codec == 3:
        return _lz4_frame_compress(bytes(data))
    if codec == 4:
        return bytes(_cramjam().zstd.compress(bytes(data), level=3))
    raise CompressionError(f"unknown compression codec id {codec}")


def decompress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """Decompress a records section; raise :class:`CompressionError` on any malformed input."""
    if codec == 0:
        return bytes(data)
    if codec not in CODEC_NAMES:
        raise CompressionError(f"unknown compression codec id {codec}")
    raw = bytes(data)
    try:
        if codec == 1:
            return gzip.decompress(raw)
        if codec == 2:
            return _snappy_decompress(raw)
        if codec == 3:
            return bytes(_cramjam().lz4.decompress(raw))
        return bytes(_cramjam().zstd.decompress(raw))
    except (CompressionError, ImportError):
        raise
    except (OSError, EOFError, zlib.error, ValueError, struct.error) as exc:
        raise CompressionError(f"invalid {CODEC_NAMES[codec]} data: {exc}") from exc
    except Exception as exc:  # cramjam raises its own DecompressionError (an Exception subclass)
        raise CompressionError(f"invalid {CODEC_NAMES[codec]} data: {exc}") from exc


def _xerial_compress(data: bytes) -> bytes:
    snappy = _cramjam().snappy
    out = bytearray(_XERIAL_HEADER)
    for start in range(0, len(data), _XERIAL_BLOCK):
        block = bytes(snappy.compress_raw(data[start : start + _XERIAL_BLOCK]))
        out += struct.pack(">i", len(block))
        out += block
    return bytes(out)


def _snappy_decompress(data: bytes) -> bytes:
    snappy = _cramjam().snappy
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(snappy.decompress_raw(data))
    if len(data) < len(_XERIAL_HEADER):
        raise CompressionError("truncated xerial snappy header")
    out = bytearray()
    pos = len(_XERIAL_HEADER)
    while pos < len(data):
        if pos + 4 > len(data):
            raise CompressionError("truncated xerial snappy chunk length")
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if size < 0 or pos + size > len(data):
            raise CompressionError("xerial snappy chunk runs past the end of the data")
        out += bytes(snappy.decompress_raw(data[pos : pos + size]))
        pos += size
    return bytes(out)


def _lz4_frame_compress(data: bytes) -> bytes:
    lz4 = _cramjam().lz4
    out = bytearray(_LZ4_HEADER)
    for start in range(0, len(data), _LZ4_BLOCK):
        chunk = data[start : start + _LZ4_BLOCK]
        block = bytes(lz4.compress_block(chunk, store_size=False))
        if len(block) >= len(chunk):
            out += struct.pack("<I", len(chunk) | _LZ4_UNCOMPRESSED_FLAG)
            out += chunk
        else:
            out += struct.pack("<I", len(block))
            out += block
    out += _LZ4_END_MARK
    return bytes(out)
