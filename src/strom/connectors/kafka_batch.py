"""From fetched Kafka records to a micro-batch and its dead letters.

:class:`RawRecords` is the seam between fetching and decoding: one partition's records,
column by column. Today librdkafka hands records over one ``Message`` at a time, so
:func:`records_from_messages` builds the columns in a Python loop. A fetcher that decodes whole
record batches itself (strom's own Fetch client, turning each record batch into Arrow arrays in
bulk) would build :class:`RawRecords` directly and skip that loop; :class:`BatchDecoder` is
unchanged by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from strom.connectors.deadletter import dead_letter_frame
from strom.connectors.decode import decode_json, decode_raw

__all__ = [
    "HEADERS_DTYPE",
    "METADATA_SCHEMA",
    "BatchDecoder",
    "RawRecords",
    "records_from_messages",
]

ValueFormat = Literal["json", "raw"]

#: Columns every batch carries after the value's columns.
METADATA_SCHEMA = pl.Schema(
    {
        "_key": pl.Binary(),
        "_topic": pl.String(),
        "_partition": pl.Int32(),
        "_offset": pl.Int64(),
        "_timestamp": pl.Int64(),
    }
)
#: The optional ``_headers`` column: a record's headers in order (names may repeat).
HEADERS_DTYPE = pl.List(pl.Struct({"key": pl.String(), "value": pl.Binary()}))


@dataclass(frozen=True)
class RawRecords:
    """Records of one partition, in offset order, column by column (one item per record)."""

    topic: str
    partition: int
    values: Sequence[bytes | None]
    keys: Sequence[bytes | None]
    offsets: Sequence[int]
    timestamps: Sequence[int | None]
    headers: Sequence[Any] | None = None  # lists of (name, value) pairs, when asked for


def records_from_messages(
    topic: str, partition: int, messages: Sequence[Message], headers: bool
) -> RawRecords:
    """Columns of librdkafka messages (the record-at-a-time path)."""
    return RawRecords(
        topic,
        partition,
        values=[m.value() for m in messages],
        keys=[m.key() for m in messages],
        offsets=[m.offset() or 0 for m in messages],
        timestamps=[_timestamp(m) for m in messages],
        headers=[m.headers() for m in messages] if headers else None,
    )


def _timestamp(message: Message) -> int | None:
    kind, ts = message.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else ts


class BatchDecoder:
    """Decodes :class:`RawRecords` into the source's batch schema plus dead-letter rows."""

    def __init__(
        self,
        value_format: ValueFormat,
        value_schema: pl.Schema,
        required: Sequence[str],
        headers: bool,
    ) -> None:
        self.value_format = value_format
        self.value_schema = value_schema
        self.required = list(required)
        self.headers = headers

    def decode(self, raw: RawRecords) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
        """``(rows, dead_letters)``; either is ``None`` when it would be empty."""
        dead = None
        if self.value_format == "raw":
            body, good = decode_raw(raw.values), None
        else:
            decoded = decode_json(raw.values, self.value_schema, self.required)
            body, good = decoded.frame, decoded.good
            if decoded.failures:
                failed = [f.index for f in decoded.failures]
                dead = dead_letter_frame(
                    raw.topic,
                    raw.partition,
                    [f.reason for f in decoded.failures],
                    [raw.offsets[i] for i in failed],
                    [raw.timestamps[i] for i in failed],
                    [raw.values[i] for i in failed],
                )
        if body.height == 0:
            return None, dead
        return body.with_columns(**self._metadata(raw, good, body.height)), dead

    def _metadata(self, raw: RawRecords, good: list[int] | None, n: int) -> dict[str, pl.Series]:
        def pick(column: Sequence[Any]) -> Sequence[Any]:
            return column if good is None else [column[i] for i in good]

        meta = {
            "_key": pl.Series("_key", pick(raw.keys), dtype=pl.Binary()),
            "_topic": pl.Series("_topic", [raw.topic] * n, dtype=pl.String()),
            "_partition": pl.Series("_partition", [raw.partition] * n, dtype=pl.Int32()),
            "_offset": pl.Series("_offset", pick(raw.offsets), dtype=pl.Int64()),
            "_timestamp": pl.Series("_timestamp", pick(raw.timestamps), dtype=pl.Int64()),
        }
        if self.headers:
            headers = pick(raw.headers) if raw.headers is not None else [None] * n
            meta["_headers"] = pl.Series("_headers", headers, dtype=HEADERS_DTYPE)
        return meta
