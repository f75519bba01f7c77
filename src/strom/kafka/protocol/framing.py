"""Request framing and headers, sans-IO.

A Kafka frame is a 4-byte big-endian size followed by that many bytes. A request starts with a
header (v1, or v2 for flexible API versions, whose client id stays a non-compact string); a
response header is v0, or v1 for flexible versions — except ApiVersions, whose response header is
always v0 so that a client can read it before it knows what the broker supports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from strom.kafka.protocol.codec import DecodeError, Part, Reader, codec_for

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "FrameTooLarge",
    "RequestHeader",
    "encode_response",
    "frame_size",
    "parse_request_header",
]

DEFAULT_MAX_REQUEST_BYTES = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes
API_VERSIONS_KEY = 18

_SIZE = struct.Struct(">i")
_FIXED = struct.Struct(">hhi")


class FrameTooLarge(ValueError):
    """A frame's declared size is over the limit (or negative); Kafka closes the connection."""


def frame_size(prefix: bytes, limit: int = DEFAULT_MAX_REQUEST_BYTES) -> int:
    """The body size announced by a 4-byte frame prefix."""
    size = int(_SIZE.unpack(prefix)[0])
    if size < 0 or size > limit:
        raise FrameTooLarge(f"frame of {size} bytes (limit {limit})")
    return size


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def parse_request_header(
    frame: bytes | memoryview, flexible_of: Any
) -> tuple[RequestHeader, Reader]:
    """Parse the header of a request frame; return it and a reader positioned at the body.

    ``flexible_of(api_key, api_version) -> bool | None`` says whether that request version uses
    the flexible (v2) header; ``None`` means the API or version is not supported, and then the
    body is left unparsed (the reader is positioned after the fixed part of the header).
    """
    reader = Reader(frame)
    if reader.remaining() < _FIXED.size:
        raise DecodeError("request header truncated")
    api_key, api_version, correlation_id = _FIXED.unpack_from(reader.buf, 0)
    reader.pos = _FIXED.size
    flexible = flexible_of(api_key, api_version)
    header_codec = codec_for("RequestHeader", 2 if flexible else 1)
    # The fixed part is re-read by the generated codec to stay spec-driven.
    reader.pos = 0
    if flexible is None:
        fields = codec_for("RequestHeader", 1).decode_prefix(reader)
    else:
        fields = header_codec.decode_prefix(reader)
    header = RequestHeader(api_key, api_version, correlation_id, fields.get("client_id"))
    return header, reader


def encode_response(
    api_key: int, correlation_id: int, response_name: str, version: int, body: dict[str, Any]
) -> list[Part]:
    """Encode a whole response frame: size prefix, header, body. File regions stay separate."""
    codec = codec_for(response_name, version)
    header_version = 1 if codec.flexible and api_key != API_VERSIONS_KEY else 0
    header = codec_for("ResponseHeader", header_version).encode({"correlation_id": correlation_id})
    parts = codec.encode_parts(body)
    size = len(header) + sum(len(p) if isinstance(p, bytes) else p.length for p in parts)
    first = parts[0]
    if isinstance(first, bytes):
        parts[0] = _SIZE.pack(size) + header + first
    else:
        parts.insert(0, _SIZE.pack(size) + header)
    return parts
