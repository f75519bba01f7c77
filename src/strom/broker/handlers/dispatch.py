"""From a request frame to a response frame: header, version check, decode, handle, encode.

Sans-IO apart from awaiting the handler. The outcome tells the server what to do with the
connection: send parts, send nothing (``acks=0``), or close it (what Kafka does for malformed
requests and unknown APIs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strom.broker.handlers.base import REGISTRY, Context
from strom.kafka.protocol.codec import DecodeError, EncodeError, Part, codec_for
from strom.kafka.protocol.errors import ErrorCode
from strom.kafka.protocol.framing import (
    API_VERSIONS_KEY,
    RequestHeader,
    encode_response,
    parse_request_header,
)

if TYPE_CHECKING:
    from strom.broker.state import BrokerState

__all__ = ["Close", "Outcome", "dispatch", "supported_api_versions"]

log = logging.getLogger("strom.broker")


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection; ``reason`` is logged once."""

    reason: str


Outcome = list[Part] | None | Close


def _flexible_of(api_key: int, api_version: int) -> bool | None:
    entry = REGISTRY.get(api_key)
    if entry is None or not entry.min_version <= api_version <= entry.max_version:
        return None
    return codec_for(entry.request, api_version).flexible


def supported_api_versions() -> list[dict[str, int]]:
    return [
        {
            "api_key": a.key,
            "min_version": a.min_version,
            "max_version": a.max_version,
        }
        for a in sorted(REGISTRY.values(), key=lambda a: a.key)
    ]


def _unsupported_api_versions(header: RequestHeader) -> list[Part]:
    # KIP-511: answer an unknown ApiVersions version with v0 and our ranges, so that the client
    # can pick a version both sides know and retry.
    body = {"error_code": int(ErrorCode.UNSUPPORTED_VERSION), "api_keys": supported_api_versions()}
    return encode_response(API_VERSIONS_KEY, header.correlation_id, "ApiVersionsResponse", 0, body)


async def dispatch(state: BrokerState, frame: bytes, client_host: str) -> Outcome:
    """Handle one request frame (without its size prefix)."""
    try:
        header, reader = parse_request_header(frame, _flexible_of)
    except DecodeError as exc:
        return Close(f"malformed request header: {exc}")
    entry = REGISTRY.get(header.api_key)
    if entry is None:
        return Close(f"unknown API key {header.api_key}")
    if not entry.min_version <= header.api_version <= entry.max_version:
        if header.api_key == API_VERSIONS_KEY:
            return _unsupported_api_versions(header)
        return Close(f"unsupported {entry.name} version {header.api_version}")
    try:
        body = codec_for(entry.request, header.api_version).decode_prefix(reader)
    except DecodeError as exc:
        return Close(f"malformed {entry.name} v{header.api_version} request: {exc}")
    if reader.remaining():
        # Kafka ignores bytes after a request body, and clients depend on it: librdkafka
        # (2.x) sends "all topics" Metadata v9+ with a 4-byte placeholder where the 1-byte null
        # compact array belongs, leaving 3 extra bytes. Closing would cut such clients off.
        log.debug(
            "ignoring %d trailing bytes after %s v%d request",
            reader.remaining(),
            entry.name,
            header.api_version,
        )
    result = await entry.handler(Context(state, header, client_host), body)
    if result is None:
        return None
    try:
        return encode_response(
            header.api_key, header.correlation_id, entry.response, header.api_version, result
        )
    except EncodeError as exc:
        log.exception("cannot encode %s v%d response", entry.name, header.api_version)
        return Close(f"internal error encoding the response: {exc}")
