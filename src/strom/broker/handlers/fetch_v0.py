"""Fetch v0-3: the answer's v2 batches down-converted to the message format those versions read.

Fetch v0-1 read message format v0 and v2-3 read v1 (Kafka 0.10's); strom's log holds v2 batches
only, so, like Kafka up to 3.9, the broker converts what it read before answering (see
:mod:`strom.kafka.protocol.legacy_records` for what the conversion keeps and drops). This is the
slow path: the bytes are read into Python instead of being sent with ``sendfile``.

Sizes are those of the v2 bytes read (``partition_max_bytes`` and, from v3, ``max_bytes``, at
least one batch); the converted message set may be somewhat larger or smaller. A partition whose
data cannot be converted (zstd, which the old formats cannot carry) answers
``UNSUPPORTED_COMPRESSION_TYPE``, as Kafka does.
"""

from __future__ import annotations

import logging
from typing import Any

from strom.broker.handlers.base import Body
from strom.broker.log.fileio import pread_all
from strom.kafka.protocol.codec import FileRegion
from strom.kafka.protocol.errors import ErrorCode
from strom.kafka.protocol.legacy_records import UnsupportedCompressionError, down_convert
from strom.kafka.protocol.records import RecordError

__all__ = ["down_convert_responses", "magic_for_fetch"]

log = logging.getLogger("strom.broker")


def magic_for_fetch(version: int) -> int:
    """The message format a Fetch version below 4 reads."""
    return 0 if version <= 1 else 1


def _convert(entry: dict[str, Any], region: FileRegion, magic: int, fetch_offset: int) -> None:
    try:
        entry["records"] = down_convert(
            pread_all(region.fd, region.length, region.offset), magic, fetch_offset
        )
        return
    except UnsupportedCompressionError as exc:
        code, reason = ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, str(exc)
    except ImportError as exc:  # the codec's optional package is not installed
        code, reason = ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, str(exc)
    except RecordError as exc:
        code, reason = ErrorCode.CORRUPT_MESSAGE, str(exc)
    except OSError as exc:
        code, reason = ErrorCode.KAFKA_STORAGE_ERROR, str(exc)
    log.warning(
        "cannot down-convert partition %d to magic %d: %s", entry["partition_index"], magic, reason
    )
    entry["error_code"] = int(code)
    entry["records"] = b""


def down_convert_responses(topics_out: list[dict[str, Any]], req: Body, version: int) -> None:
    """Replace, in place, each partition's file region by its converted bytes.

    ``topics_out`` lists the request's topics and partitions in request order, as the Fetch
    handler builds it.
    """
    magic = magic_for_fetch(version)
    for t_out, t_req in zip(topics_out, req["topics"], strict=True):
        for entry, p_req in zip(t_out["partitions"], t_req["partitions"], strict=True):
            region = entry["records"]
            if isinstance(region, FileRegion):
                _convert(entry, region, magic, p_req["fetch_offset"])
