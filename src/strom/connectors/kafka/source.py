"""KafkaSource: a Kafka topic as a partitioned source of Polars micro-batches."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
from confluent_kafka import Message

from strom.connectors.deadletter import dead_letter_output
from strom.connectors.kafka.batch import (
    HEADERS_DTYPE,
    METADATA_SCHEMA,
    BatchDecoder,
    ValueFormat,
    records_from_messages,
)
from strom.connectors.kafka.common import ClientErrors
from strom.connectors.kafka.librdkafka_fetch import Fetcher, PartitionState, Start
from strom.engine.contracts import (
    END_OF_PARTITION,
    Metrics,
    PollResult,
    Position,
    PositionError,
    Sink,
    int_field,
)
from strom.pipeline.validate import PlanError

if TYPE_CHECKING:
    from strom.connectors.kafka.native_fetch import NativeFetcher, NativePartitionState
    from strom.connectors.kafka.native_records import RecordColumns

__all__ = ["IsolationLevel", "KafkaClient", "KafkaSource"]

#: Which Kafka client fetches: ``"strom"`` (strom's own, decoding record batches in bulk;
#: plaintext) or ``"librdkafka"`` (confluent-kafka: SASL, TLS, managed cloud clusters).
KafkaClient = Literal["strom", "librdkafka"]

#: Which transactional records a source reads (Kafka's ``isolation.level``).
IsolationLevel = Literal["read_committed", "read_uncommitted"]


@dataclass
class _Counters:
    records: int = 0
    rows: int = 0
    batches: int = 0


@dataclass
class _Decoded:
    """A partition's chunk, decoded with another partition's (one parse for a round's chunks:
    :meth:`BatchDecoder.decode_round`) and handed over at that partition's next poll."""

    generation: int
    records: int
    position: int
    rows: pl.DataFrame | None
    dead: pl.DataFrame | None


#: The most fetched bytes a round's chunks may span to be decoded together: merging is for
#: small chunks, whose fixed per-parse cost it divides; large ones amortize it anyway and would
#: be copied into one buffer.
ROUND_DECODE_BYTES = 1 << 18


class KafkaSource:
    """Reads ``topic``: one source partition per Kafka partition, each batch a Polars frame.

    **Columns.** With ``value_format="json"`` each value must be a JSON object; its fields are
    decoded into the columns of ``schema`` (a Polars schema), in bulk — see
    :mod:`strom.connectors.decode` for the exact coercion rules. Every field is required (absent
    or null means undecodable) except those in ``optional_fields``. With ``"raw"`` the value is
    one Binary column ``value``. Then come ``_key`` (Binary), ``_topic``, ``_partition`` (Int32),
    ``_offset``, ``_timestamp`` (Int64 epoch ms, null if the record has none) and, with
    ``headers=True``, ``_headers`` (a list of ``{key, value}``; off by default because building
    nested columns record by record is the slow path). Use ``timestamp="_timestamp"`` in
    ``Pipeline.source`` for Kafka's own event time.

    **Undecodable records** (bad JSON, not an object, missing or mistyped fields, not UTF-8,
    empty) go to ``dead_letter`` as rows of :data:`~strom.connectors.deadletter.DEAD_LETTER_SCHEMA`
    (``reason``, ``topic``, ``partition``, ``offset``, ``timestamp``, ``raw``) and processing
    continues. Without a dead-letter sink they are logged (one warning per batch) and counted in
    :meth:`metrics`; never dropped silently. The dead-letter sink is opened by its first write
    and closed by :meth:`close`, or when every partition of a bounded source has ended.

    **Reading.** One consumer per source, partitions assigned manually (no group rebalancing;
    ``group_id`` only names the group whose offsets ``start="committed"`` and :meth:`commit` use).
    ``start`` is resolved to a concrete offset when a partition is opened (``committed`` falls
    back to the earliest offset when the group has none). A poll returns at most
    ``max_batch_records`` rows and never waits: it hands over what has arrived. Waiting is
    :meth:`wait`'s, one wait for all partitions of the source, at most ``poll_timeout_ms``, that
    ends as soon as records arrive for any of them (the executor calls it after a round of polls
    that found nothing). With ``bounded=True`` each partition is read up to its high
    watermark as observed when the source's partitions are opened (all are read at once), then
    ends; the bounded runner can scan it whole.

    **Positions:** a reader's position is ``{"offset": n}``, the offset after the last record
    it handed to the engine (a record sent to the dead-letter output counts as handed); seeking
    to one continues at ``n`` (an offset outside the partition's range, e.g. deleted by
    retention, is a :class:`~strom.engine.contracts.PositionError`). :meth:`positions` is every
    opened partition's offset.

    **Delivery guarantee: at-least-once.** A run restored from an executor snapshot re-reads
    every record after the snapshot's positions, so downstream sinks and the dead-letter sink
    see those again. Without one, a restart resumes only the offsets of the last
    :meth:`commit`, and only with ``start="committed"``; with ``start="earliest"`` the whole
    topic is read again. Nothing commits automatically. Commit only what downstream sinks have
    made durable.

    **Transactions.** ``isolation_level="read_committed"`` (the default, as in librdkafka)
    reads only what transactional producers committed: each partition is read up to its last
    stable offset (the first offset of its oldest open transaction), so a reader waits at an
    open transaction, records after it included, until it commits or aborts; records of
    aborted transactions are never delivered; a bounded partition ends at its last stable
    offset as of opening. ``"read_uncommitted"`` delivers every record up to the high
    watermark, aborted and still open transactions included. Transaction markers are never
    delivered under either; a reader's position moves past them (and past aborted records)
    once everything before them was delivered, so it is always the next offset to read.

    **Client.** ``client="strom"`` (the default) fetches with strom's own Kafka client
    (:mod:`strom.connectors.kafka.native_fetch`): it decodes whole record batches into columns
    without a Python object per record (``benchmarks/source_fetch.py`` measures it against
    librdkafka per CPU-second; its numba kernel compiles on first use, then loads from numba's
    on-disk cache). It speaks plaintext Kafka only and honours only these ``consumer_config``
    keys: ``client.id``, ``fetch.max.bytes``, ``max.partition.fetch.bytes``,
    ``fetch.wait.max.ms``, and ``security.protocol`` when it is ``plaintext``.
    ``client="librdkafka"`` uses confluent-kafka with ``consumer_config`` passed through (SASL,
    TLS, cloud clusters), ``isolation_level`` as its ``isolation.level``. Batches, offsets,
    dead letters and metrics are the same on both.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        value_format: ValueFormat = "json",
        schema: pl.Schema | Mapping[str, pl.DataType | type[pl.DataType]] | None = None,
        optional_fields: Collection[str] = (),
        group_id: str | None = None,
        start: Start = "earliest",
        dead_letter: Sink | None = None,
        poll_timeout_ms: int = 100,
        max_batch_records: int = 10_000,
        bounded: bool = False,
        headers: bool = False,
        consumer_config: Mapping[str, Any] | None = None,
        client: KafkaClient = "strom",
        isolation_level: IsolationLevel = "read_committed",
    ) -> None:
        if value_format not in ("json", "raw"):
            raise ValueError(f"value_format must be 'json' or 'raw', not {value_format!r}")
        if start not in ("earliest", "latest", "committed"):
            raise ValueError(f"start must be 'earliest', 'latest' or 'committed', not {start!r}")
        if start == "committed" and group_id is None:
            raise ValueError("start='committed' needs group_id=... (whose offsets to start from)")
        if client not in ("strom", "librdkafka"):
            raise ValueError(f"client must be 'strom' or 'librdkafka', not {client!r}")
        if isolation_level not in ("read_committed", "read_uncommitted"):
            raise ValueError(
                "isolation_level must be 'read_committed' or 'read_uncommitted', "
                f"not {isolation_level!r}"
            )
        if "isolation.level" in (consumer_config or {}):
            raise ValueError(
                "pass isolation_level=... rather than consumer_config['isolation.level']"
            )
        if poll_timeout_ms < 0 or max_batch_records < 1:
            raise ValueError("poll_timeout_ms must be >= 0 and max_batch_records >= 1")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.value_format = value_format
        self.group_id = group_id
        self.bounded = bounded
        self.max_batch_records = max_batch_records
        self.isolation_level = isolation_level
        value_schema = _value_schema(value_format, schema)
        unknown = set(optional_fields) - set(value_schema)
        if value_format == "json" and unknown:
            raise ValueError(f"optional_fields {sorted(unknown)} are not in the schema")
        clash = set(value_schema) & (set(METADATA_SCHEMA) | {"_headers"})
        if clash:
            raise ValueError(f"schema columns {sorted(clash)} clash with the metadata columns")
        out = {**value_schema, **METADATA_SCHEMA}
        if headers:
            out["_headers"] = HEADERS_DTYPE
        self._schema = pl.Schema(out)
        self._values = frozenset(value_schema)
        self._headers = headers
        required = [c for c in value_schema if c not in set(optional_fields)]
        self._decoder = BatchDecoder(value_format, value_schema, required, headers)
        self._dead = dead_letter_output(dead_letter, f"KafkaSource({topic!r})")
        self.client = client
        self._fetcher: Fetcher | NativeFetcher
        shared: dict[str, Any] = {
            "group_id": group_id,
            "start": start,
            "bounded": bounded,
            "max_records": max_batch_records,
            "config": consumer_config,
        }
        self.poll_timeout_ms = poll_timeout_ms
        if client == "strom":
            self._fetcher = _native_fetcher(
                bootstrap_servers, topic, poll_timeout_ms=poll_timeout_ms,
                read_committed=isolation_level == "read_committed", **shared,
            )  # fmt: skip
        else:
            errors = ClientErrors(f"KafkaSource({topic!r})")
            shared["config"] = {**(consumer_config or {}), "isolation.level": isolation_level}
            self._fetcher = Fetcher(bootstrap_servers, topic, errors=errors, **shared)
        self._counts = _Counters()
        self._decoded: dict[int, _Decoded] = {}

    # -- the Source protocol ---------------------------------------------------------------

    def schema(self) -> pl.Schema:
        return self._schema

    def partition_count(self) -> int:
        """The topic's partition count, from metadata on first call (then fixed)."""
        return self._fetcher.partition_count()

    def open_partition(self, index: int) -> _KafkaPartition:
        """A reader of Kafka partition ``index`` from ``start``; reopening a partition
        supersedes its previous reader (which then raises on poll)."""
        count = self.partition_count()
        if not 0 <= index < count:
            raise IndexError(f"{self.topic!r} has partitions 0..{count - 1}, not {index}")
        if self.client == "strom":
            from strom.connectors.kafka.native_json import warm_up

            warm_up()  # the kernels are loaded now, not in the first fetch's latency
        self._decoded.pop(index, None)  # decoded for the reader this one supersedes
        return _KafkaPartition(self, index, self._fetcher.open(index).generation)

    def project(self, columns: Collection[str] | None) -> None:
        """Build only the metadata columns among ``columns`` (None: all of them) in the batches
        polled from now on; the value's fields are always decoded. The streaming executor calls
        it with what its plan reads (:func:`strom.engine.projection.read_columns`): a pipeline
        that never reads ``_key`` or ``_offset`` does not pay for building them."""
        every = self._decoder.all_metadata()
        self._decoder.metadata = every if columns is None else every & frozenset(columns)

    def scan_partition(self, index: int) -> pl.LazyFrame:
        """Partition ``index`` up to its current high watermark, whole (needs ``bounded=True``)."""
        if not self.bounded:
            raise PlanError(
                f"KafkaSource({self.topic!r}) is unbounded; pass bounded=True to run it with the "
                "bounded runner, or run it with strom.runtime"
            )
        reader = self.open_partition(index)
        frames = []
        while (item := reader.poll()) is not END_OF_PARTITION:
            if item is not None and item.height:
                frames.append(item)
        if not frames:
            kept = self._decoder.metadata
            schema = {n: t for n, t in self._schema.items() if n in kept or n in self._values}
            return pl.LazyFrame(schema=schema)
        return pl.concat(frames, how="vertical").lazy()

    def wait(self, timeout_s: float) -> bool:
        """Wait until records arrive for an open partition (True), at most ``timeout_s`` and
        ``poll_timeout_ms`` (False). True at once when records are buffered, or when no
        partition is being read (the next poll ends it), or while a chunk decoded ahead (with
        another partition's) waits for its partition's poll."""
        states = self._fetcher.states.values()
        reading = [s for s in states if s.assigned and not s.ended and not s.bounded_done()]
        if not reading or self._decoded or any(s.buffer for s in states):
            return True
        return self._fetcher.fill(min(timeout_s, self.poll_timeout_ms / 1000))

    # -- offsets and lifecycle ---------------------------------------------------------------

    def positions(self) -> dict[int, int]:
        """Per opened partition, the next offset to deliver (all before it were delivered)."""
        states = self._fetcher.states
        return {p: states[p].position for p in sorted(states)}

    def commit(self) -> None:
        """Commit :meth:`positions` for ``group_id``, synchronously."""
        if self.group_id is None:
            raise ValueError(f"KafkaSource({self.topic!r}).commit() needs group_id=...")
        positions = self.positions()
        if positions:
            self._fetcher.commit(positions)

    def metrics(self) -> Metrics:
        """Records read (``rows_in``), rows delivered (``rows_out``), dead letters, and the lag:
        per opened partition its high watermark (as of the last fetch) minus its position,
        summed (None before any fetch answered); ``detail["batches"]``."""
        lag = None
        for p, state in self._fetcher.states.items():
            high = state.end if state.end is not None else self._fetcher.high_watermark(p)
            if high is not None:
                lag = (lag or 0) + max(0, high - state.position)
        c = self._counts
        return Metrics(
            rows_in=c.records,
            rows_out=c.rows,
            dead_letters=self._dead.count,
            lag=lag,
            label=f"KafkaSource({self.topic!r})",
            detail={"batches": c.batches},
        )

    def side_sinks(self) -> Sequence[Sink]:
        """The dead-letter output (checkpoints pre-commit it with the plan's sinks); none when
        dead letters are only logged (nothing to commit: an exactly-once run accepts it)."""
        return [self._dead] if self._dead.sink is not None else []

    def close(self) -> None:
        """Close the consumer and the dead-letter sink; open readers then raise on poll.
        Idempotent; a later ``open_partition`` starts a new consumer."""
        for state in self._fetcher.states.values():
            if not state.ended:
                state.generation = -1
        self._decoded.clear()
        self._release()

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _release(self) -> None:
        try:
            self._fetcher.close()
        finally:
            self._dead.close()

    def _poll(self, index: int, generation: int) -> PollResult:
        state = self._state(index, generation)
        if state.ended:
            return END_OF_PARTITION
        decoded = self._decoded.pop(index, None)
        if decoded is not None and decoded.generation == state.generation:
            return self._deliver(
                state, decoded.records, decoded.position, decoded.rows, decoded.dead
            )
        if not state.buffer:
            if not state.bounded_done():
                self._fetcher.fill()
            if not state.buffer:
                _caught_up(state)
                return self._end(index, state) if state.bounded_done() else None
        taken = state.take(self.max_batch_records)
        if not isinstance(taken, list):
            others = self._round_chunks(index, taken)
            if others:
                return self._batch_round(index, state, taken, others)
        return self._batch(index, state, taken)

    def _round_chunks(
        self, index: int, first: RecordColumns
    ) -> list[tuple[int, NativePartitionState, RecordColumns]]:
        """The chunks other partitions have buffered, taken to be decoded with ``first`` (up
        to :data:`ROUND_DECODE_BYTES` of fetched bytes between them)."""
        if self._decoder.value_format != "json":
            return []
        out = []
        size = len(first.source)
        for p, state in self._fetcher.states.items():
            if p == index or p in self._decoded or not state.buffer:
                continue
            if not state.assigned or state.ended:
                continue
            head = state.buffer[0]
            assert not isinstance(head, Message)  # strom's fetcher buffers RecordColumns
            size += len(head.source)
            if size > ROUND_DECODE_BYTES:
                break
            chunk = state.take(self.max_batch_records)
            assert not isinstance(chunk, list)
            out.append((p, state, chunk))
        return out  # type: ignore[return-value]

    def _state(self, index: int, generation: int) -> PartitionState | NativePartitionState:
        state = self._fetcher.states.get(index)
        if state is None or state.generation != generation:
            raise RuntimeError(
                f"this reader of {self.topic!r}[{index}] is closed: the source was closed or "
                "the partition reopened"
            )
        return state

    def _seek(self, index: int, generation: int, position: Position) -> int:
        """Seek reader ``generation`` of ``index``; returns its new generation."""
        self._state(index, generation)
        self._decoded.pop(index, None)
        owner = f"KafkaSource({self.topic!r}) partition {index}"
        offset = int_field(position, "offset", owner)
        low, high = self._fetcher.watermarks(index)
        if not low <= offset <= high:
            raise PositionError(
                f"{owner}: offset {offset} is outside the partition's offsets [{low}, {high}] "
                "(deleted by retention, or a position of another topic)"
            )
        return self._fetcher.seek(index, offset).generation

    def _end(self, index: int, state: PartitionState | NativePartitionState) -> PollResult:
        """A bounded partition has ended; once all have, release the consumer. The dead-letter
        sink stays open until :meth:`close`: a run's final checkpoint still pre-commits and
        commits it (an exactly-once dead-letter sink closed here would lose its last rows)."""
        assert state.end is not None
        state.ended = True
        state.position = max(state.position, state.end)
        self._fetcher.unassign(index)
        states = self._fetcher.states
        if all(p in states and states[p].ended for p in range(self.partition_count())):
            self._fetcher.close()
        return END_OF_PARTITION

    def _batch(
        self,
        index: int,
        state: PartitionState | NativePartitionState,
        taken: list[Message] | RecordColumns,
    ) -> pl.DataFrame | None:
        if isinstance(taken, list):
            raw = records_from_messages(self.topic, index, taken, self._headers)
            position = raw.offsets[-1] + 1
            rows, dead = self._decoder.decode(raw)
        else:
            position = int(taken.offsets[-1]) + 1
            rows, dead = self._decoder.decode_columns(self.topic, index, taken)
        return self._deliver(state, len(taken), position, rows, dead)

    def _batch_round(
        self,
        index: int,
        state: PartitionState | NativePartitionState,
        taken: RecordColumns,
        others: list[tuple[int, NativePartitionState, RecordColumns]],
    ) -> pl.DataFrame | None:
        """Partition ``index``'s batch, the chunks of ``others`` decoded with it in one parse
        (each kept for its partition's next poll); each alone when one needs the per-record
        rules."""
        parts = [(index, taken), *((p, chunk) for p, _, chunk in others)]
        try:
            frames = self._decoder.decode_round(self.topic, parts)
            for i, (p, other, chunk) in enumerate(others, start=1):
                if frames is None:
                    rows, dead = self._decoder.decode_columns(self.topic, p, chunk)
                else:
                    rows, dead = frames[i], None
                position = int(chunk.offsets[-1]) + 1
                self._decoded[p] = _Decoded(other.generation, len(chunk), position, rows, dead)
        except BaseException:  # the chunks go back where they were: nothing is skipped
            for p, other, chunk in reversed(others):
                self._decoded.pop(p, None)
                other.buffer.appendleft(chunk)
            assert not isinstance(state.buffer, list)  # strom's client: chunks of columns
            state.buffer.appendleft(taken)
            raise
        if frames is None:
            return self._batch(index, state, taken)
        return self._deliver(state, len(taken), int(taken.offsets[-1]) + 1, frames[0], None)

    def _deliver(
        self,
        state: PartitionState | NativePartitionState,
        records: int,
        position: int,
        rows: pl.DataFrame | None,
        dead: pl.DataFrame | None,
    ) -> pl.DataFrame | None:
        """Hand a decoded chunk over: the partition's position moves past it."""
        state.position = position
        if not state.buffer:
            _caught_up(state)
        self._counts.records += records
        self._counts.batches += 1
        if dead is not None:
            self._dead.write(dead)
        if rows is None:
            return None
        self._counts.rows += rows.height
        return rows


class _KafkaPartition:
    """The reader :meth:`KafkaSource.open_partition` returns; all state lives in the source."""

    def __init__(self, source: KafkaSource, index: int, generation: int) -> None:
        self._source = source
        self._index = index
        self._generation = generation

    def poll(self) -> PollResult:
        return self._source._poll(self._index, self._generation)

    def position(self) -> Position:
        return {"offset": self._source._state(self._index, self._generation).position}

    def seek(self, position: Position) -> None:
        self._generation = self._source._seek(self._index, self._generation, position)


def _caught_up(state: PartitionState | NativePartitionState) -> None:
    """With nothing buffered every offset below ``fetched`` was delivered or skipped (a
    transaction marker, an aborted record): the position, the next offset to read, moves there
    (never past a bounded end)."""
    target = state.fetched if state.end is None else min(state.fetched, state.end)
    if target > state.position:
        state.position = target


def _native_fetcher(
    bootstrap_servers: str, topic: str, *, config: Mapping[str, Any] | None, **options: Any
) -> NativeFetcher:
    """strom's own fetcher (imported here: numba is loaded only by sources that use it)."""
    from strom.connectors.kafka.native_fetch import NATIVE_CONFIG_KEYS, NativeFetcher

    unknown = sorted(set(config or {}) - NATIVE_CONFIG_KEYS)
    protocol = str((config or {}).get("security.protocol", "plaintext")).lower()
    if unknown or protocol != "plaintext":
        raise ValueError(
            f"consumer_config {unknown or ['security.protocol']} needs client='librdkafka' "
            f"(client='strom' honours only {sorted(NATIVE_CONFIG_KEYS)}, plaintext)"
        )
    return NativeFetcher(bootstrap_servers, topic, config=config, **options)


def _value_schema(
    value_format: ValueFormat,
    schema: pl.Schema | Mapping[str, pl.DataType | type[pl.DataType]] | None,
) -> pl.Schema:
    if value_format == "raw":
        if schema is not None:
            raise ValueError("value_format='raw' takes no schema: the value is one Binary column")
        return pl.Schema({"value": pl.Binary()})
    if schema is None:
        raise ValueError(
            "value_format='json' needs schema=... (e.g. {'ts': pl.Int64, 'device': pl.String}) "
            "so every batch has the same columns and the plan can be validated"
        )
    return pl.Schema(schema)
