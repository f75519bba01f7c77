"""Reading the "consumer" embedded protocol's subscription, only as far as the broker needs.

Kafka's consumers put a ConsumerProtocolSubscription (versions 0-3, never flexible) in their
JoinGroup metadata: ``version:int16, topics:[string], ...``. The broker only needs the topic
names (OffsetDelete refuses to delete offsets of topics an active group subscribes to).
"""

from __future__ import annotations

import struct

__all__ = ["subscribed_topics"]

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def subscribed_topics(metadata: bytes) -> set[str] | None:
    """The topics in a consumer subscription, or None if ``metadata`` is not one we can read."""
    try:
        (version,) = _I16.unpack_from(metadata, 0)
        (count,) = _I32.unpack_from(metadata, 2)
        if version < 0 or count < 0:
            return None
        pos = 6
        topics: set[str] = set()
        for _ in range(count):
            (length,) = _I16.unpack_from(metadata, pos)
            pos += 2
            if length < 0 or pos + length > len(metadata):
                return None
            topics.add(metadata[pos : pos + length].decode("utf-8"))
            pos += length
        return topics
    except (struct.error, UnicodeDecodeError):
        return None
