"""From fetched Kafka records to a micro-batch and its dead letters.

:class:`RawRecords` is the seam between fetching and decoding: one partition's records,
column by column. librdkafka hands records over one ``Message`` at a time, so
:func:`records_from_messages` builds the columns in a Python loop. strom's own fetcher
(:mod:`strom.connectors.kafka.native_fetch`) decodes whole record batches into flat arrays instead
(:class:`~strom.connectors.kafka.native_records.RecordColumns`), which
:meth:`BatchDecoder.decode_columns` turns into the same batch without a per-record loop (JSON
by :mod:`strom.connectors.kafka.native_json`' compiled parser when the values are plain flat
objects, else by one ``pl.read_ndjson`` call) — and, for a batch with an undecodable record,
hands to :meth:`BatchDecoder.decode` as :class:`RawRecords`, so dead letters follow exactly the
same rules on both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from strom.connectors.deadletter import dead_letter_frame
from strom.connectors.decode import PARSE_ERRORS, decode_json, decode_raw

if TYPE_CHECKING:
    from strom.connectors.kafka.native_json import FlatJsonSchema
    from strom.connectors.kafka.native_records import RecordColumns

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
        self._flat: FlatJsonSchema | None = None  # the compiled JSON fast path, when it applies
        self._flat_checked = False
        self.metadata: frozenset[str] = self.all_metadata()
        """The metadata columns batches carry (:meth:`KafkaSource.project` may narrow them)."""

    def all_metadata(self) -> frozenset[str]:
        """Every metadata column of this decoder's batches."""
        return frozenset([*METADATA_SCHEMA, *(["_headers"] if self.headers else [])])

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

    def decode_columns(
        self, topic: str, partition: int, columns: RecordColumns
    ) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
        """:meth:`decode` for columns from strom's fetcher: one bulk parse when every value
        decodes; otherwise the batch takes the per-record path of :meth:`decode`."""
        n = len(columns)
        if self.value_format == "raw":
            body = pl.DataFrame({"value": pl.from_arrow(columns.value_array())})
        else:
            parsed = self._parse_clean(columns)
            if parsed is None:
                return self.decode(_raw_records(topic, partition, columns, self.headers))
            body = parsed
        if n == 0:
            return None, None
        return self._with_metadata(body, topic, partition, columns), None

    def decode_round(
        self, topic: str, parts: Sequence[tuple[int, RecordColumns]]
    ) -> list[pl.DataFrame | None] | None:
        """:meth:`decode_columns` of several partitions' chunks (``(partition, columns)``) in
        one parse: one batch per chunk (None for an empty one), the same frames as decoding
        each alone. Each parse costs a fixed ~0.1 ms however few its rows (building the
        columns and the frame), and a streaming source hands over a few records per partition
        at a time, so the chunks of one round are parsed together. ``None`` when a value needs
        the per-record rules (then each chunk goes to :meth:`decode_columns`, which writes the
        dead letters) or the values are raw."""
        if self.value_format == "raw":
            return None
        from strom.connectors.kafka.native_records import concat_columns

        combined = concat_columns([columns for _, columns in parts])
        body = self._parse_clean(combined)
        if body is None:
            return None
        sizes = [len(columns) for _, columns in parts]
        partitions = np.repeat(np.array([p for p, _ in parts], np.int32), sizes)
        frame = self._with_metadata(body, topic, partitions, combined)
        out: list[pl.DataFrame | None] = []
        at = 0
        for size in sizes:
            out.append(frame.slice(at, size) if size else None)
            at += size
        return out

    def _with_metadata(
        self, body: pl.DataFrame, topic: str, partition: int | Any, columns: RecordColumns
    ) -> pl.DataFrame:
        """``body`` with the metadata columns asked for (``partition``: one, or one a row)."""
        n = len(columns)
        # hstack, not with_columns: a fraction of the per-batch cost (the names cannot clash)
        wanted = self.metadata
        meta = []
        if "_key" in wanted:
            meta.append(pl.Series("_key", columns.key_array()))
        if "_topic" in wanted:
            meta.append(pl.Series("_topic", [topic], dtype=pl.String()).new_from_index(0, n))
        if "_partition" in wanted:
            if not isinstance(partition, np.ndarray):  # one partition (an int, a numpy int)
                partition = np.full(n, partition, np.int32)
            meta.append(pl.Series("_partition", partition))
        if "_offset" in wanted:
            meta.append(pl.Series("_offset", columns.offsets))
        if "_timestamp" in wanted:
            meta.append(pl.Series("_timestamp", columns.timestamp_array()))
        if "_headers" in wanted:
            meta.append(pl.Series("_headers", columns.header_lists(), dtype=HEADERS_DTYPE))
        return body.hstack(meta) if meta else body

    def _parse_clean(self, columns: RecordColumns) -> pl.DataFrame | None:
        """The values parsed in bulk (the compiled flat parser, else one Polars call), or
        ``None`` if any value would be a dead letter (a null value, a newline inside one, a
        parse error, a row count that does not match, a required field absent or null): those
        batches take the exact per-record rules."""
        n = len(columns)
        if columns.value_null.any():
            return None
        frame = self._parse_flat(columns)
        if frame is None:
            text = columns.ndjson()
            if text.count(b"\n") != n:
                return None
            try:
                frame = pl.read_ndjson(text, schema=self.value_schema)
            except PARSE_ERRORS:
                return None
            if frame.height != n:
                return None
        if any(frame[c].null_count() for c in self.required):  # O(1) per column
            return None
        return frame

    def _parse_flat(self, columns: RecordColumns) -> pl.DataFrame | None:
        """The compiled parser of :mod:`strom.connectors.kafka.native_json` (imported here, with
        numba, only by sources on strom's own client), or ``None`` to use Polars' reader."""
        if not self._flat_checked:
            from strom.connectors.kafka.native_json import FlatJsonSchema

            self._flat = FlatJsonSchema.of(self.value_schema)
            self._flat_checked = True
        if self._flat is None:
            return None
        from strom.connectors.kafka.native_json import parse_flat

        return parse_flat(columns, self._flat)

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
        return {name: column for name, column in meta.items() if name in self.metadata}


def _raw_records(topic: str, partition: int, columns: RecordColumns, headers: bool) -> RawRecords:
    """Columns as :class:`RawRecords` (one Python object per record: the slow path)."""
    valid = columns.timestamp_valid.tolist()
    return RawRecords(
        topic,
        partition,
        values=columns.value_list(),
        keys=columns.key_array().to_pylist(),
        offsets=columns.offsets.tolist(),
        timestamps=[
            t if ok else None for t, ok in zip(columns.timestamps.tolist(), valid, strict=True)
        ],
        headers=columns.header_lists() if headers else None,
    )
