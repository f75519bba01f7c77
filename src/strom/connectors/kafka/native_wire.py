"""The client side of Kafka's wire protocol for strom's own fetcher (sans-IO: bytes only).

Requests are encoded and responses decoded by the broker's spec-driven codecs
(:mod:`strom.kafka.protocol.codec`), so every version Kafka's JSON specs describe is available;
:data:`APIS` says which versions this client can build requests for, and :func:`negotiate` picks
one against a broker's ApiVersions answer. Nothing here touches a socket.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from strom.kafka.protocol.codec import DecodeError, Reader, codec_for

__all__ = [
    "APIS",
    "RETRIABLE",
    "Api",
    "DecodeError",
    "correlation_of",
    "decode_response",
    "encode_request",
    "negotiate",
    "response_size",
]


@dataclass(frozen=True)
class Api:
    """A request this client sends: its key and the versions it can build bodies for."""

    key: int
    min_version: int
    max_version: int


#: Version ranges are where the request bodies built by :mod:`strom.connectors.kafka.native_fetch`
#: keep their meaning: Fetch stops at 12 (13 names topics by id), FindCoordinator at 3 (4
#: batches keys), OffsetFetch at 7 (8 batches groups).
APIS: Final[Mapping[str, Api]] = {
    "ApiVersions": Api(18, 0, 3),
    "Metadata": Api(3, 1, 12),
    "ListOffsets": Api(2, 1, 7),
    "Fetch": Api(1, 4, 12),
    "FindCoordinator": Api(10, 0, 3),
    "OffsetFetch": Api(9, 1, 7),
    "OffsetCommit": Api(8, 2, 8),
}

#: Partition or group errors that a metadata refresh (new leader, new coordinator) and a retry
#: resolve: NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION,
#: REQUEST_TIMED_OUT, REPLICA_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS,
#: COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, KAFKA_STORAGE_ERROR, FENCED_LEADER_EPOCH,
#: UNKNOWN_LEADER_EPOCH, OFFSET_NOT_AVAILABLE.
RETRIABLE: Final = frozenset({6, 5, 3, 7, 9, 14, 15, 16, 56, 74, 75, 78})

_SIZE: Final = struct.Struct(">i")
_API_VERSIONS_KEY: Final = 18


def negotiate(ours: Api, theirs: tuple[int, int] | None) -> int | None:
    """The highest version both sides speak, or ``None`` if the ranges do not meet."""
    if theirs is None:
        return None
    low, high = max(ours.min_version, theirs[0]), min(ours.max_version, theirs[1])
    return high if low <= high else None


def encode_request(
    name: str, version: int, correlation_id: int, client_id: str, body: dict[str, Any]
) -> bytes:
    """A whole request frame: size prefix, header (v1, or v2 when flexible), body."""
    codec = codec_for(f"{name}Request", version)
    header = codec_for("RequestHeader", 2 if codec.flexible else 1).encode(
        {
            "request_api_key": APIS[name].key,
            "request_api_version": version,
            "correlation_id": correlation_id,
            "client_id": client_id,
        }
    )
    payload = header + codec.encode(body)
    return _SIZE.pack(len(payload)) + payload


def response_size(prefix: bytes) -> int:
    """The body size a 4-byte response prefix announces."""
    size = int(_SIZE.unpack(prefix)[0])
    if size < 0:
        raise DecodeError(f"negative response size {size}")
    return size


def correlation_of(frame: bytes | bytearray | memoryview) -> int:
    """The correlation id every response header starts with."""
    if len(frame) < 4:
        raise DecodeError("response shorter than its header")
    return int(_SIZE.unpack_from(frame, 0)[0])


def decode_response(
    name: str, version: int, frame: bytes | bytearray | memoryview
) -> dict[str, Any]:
    """Decode a response frame (without its size prefix). ``records`` fields stay zero-copy
    views of ``frame``."""
    codec = codec_for(f"{name}Response", version)
    # ApiVersions answers keep header v0 so that a client can read one before negotiating.
    flexible_header = codec.flexible and APIS[name].key != _API_VERSIONS_KEY
    reader = Reader(frame)
    codec_for("ResponseHeader", 1 if flexible_header else 0).decode_prefix(reader)
    return codec.decode(reader.buf[reader.pos :])
