"""How ``strom consume`` prints a record: one line per record, whatever the bytes hold.

Pure functions of a :class:`Record`, so the output format is testable without a broker.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Message

__all__ = ["Record", "readable", "to_json", "to_text"]

_TIMESTAMP_NAMES = {TIMESTAMP_CREATE_TIME: "CreateTime", TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime"}


@dataclass(frozen=True)
class Record:
    """A consumed record, detached from librdkafka's ``Message``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    timestamp_type: str = "CreateTime"
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)

    @classmethod
    def of(cls, message: Message) -> Record:
        ts_type, ts = message.timestamp()
        raw_headers = message.headers() or []
        headers = list(raw_headers.items()) if isinstance(raw_headers, dict) else raw_headers
        return cls(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            timestamp=ts if ts_type in _TIMESTAMP_NAMES else None,
            timestamp_type=_TIMESTAMP_NAMES.get(ts_type, "NoTimestamp"),
            headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in headers],
        )


def readable(data: bytes | None, *, escape_tab: bool = False) -> str:
    """UTF-8 text as-is, other bytes as ``\\xNN``; line breaks escaped so a record stays one line.

    ``None`` (a null key or a tombstone) prints as ``null``, as Kafka's console consumer does.
    """
    if data is None:
        return "null"
    text = data.decode("utf-8", errors="backslashreplace")
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text.replace("\t", "\\t") if escape_tab else text


def to_text(record: Record, *, print_key: bool = False, print_metadata: bool = False) -> str:
    """``[metadata TAB] [key TAB] value``, without a line ending."""
    parts = []
    if print_metadata:
        ts = "-1" if record.timestamp is None else str(record.timestamp)
        parts += [
            f"Partition:{record.partition}",
            f"Offset:{record.offset}",
            f"{record.timestamp_type}:{ts}",
        ]
    if print_key:
        parts.append(readable(record.key, escape_tab=True))
    parts.append(readable(record.value))
    return "\t".join(parts)


def to_json(record: Record) -> str:
    """One JSON object, without a line ending.

    ``key`` and ``value`` are strings when they are UTF-8; otherwise they are base64 and
    ``key_encoding`` / ``value_encoding`` say ``"base64"``. ``headers`` is a list of
    ``[name, value]`` pairs (names may repeat), values decoded the same way as ``readable``.
    """
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
    }
    for name, data in (("key", record.key), ("value", record.value)):
        text, encoding = _json_bytes(data)
        out[name] = text
        if encoding is not None:
            out[f"{name}_encoding"] = encoding
    out["headers"] = [
        [name, None if value is None else value.decode("utf-8", errors="backslashreplace")]
        for name, value in record.headers
    ]
    return json.dumps(out, ensure_ascii=False, separators=(", ", ": "))


def _json_bytes(data: bytes | None) -> tuple[str | None, str | None]:
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"
