"""The engine's contracts: what every source, sink and stateful operator promises an executor.

A checkpoint (the exactly-once issue) is made of exactly these parts: every source partition's
:meth:`SourcePartition.position`, every :class:`StatefulOperator`'s :class:`OperatorState`, and
every :class:`Sink`'s :meth:`~Sink.pre_commit`. Restoring one is :meth:`SourcePartition.seek`
plus :meth:`StatefulOperator.restore`; then :meth:`Sink.commit` (or :meth:`Sink.abort`).

Layering: the plan holds sources and sinks as opaque objects and imports this module; this
module imports no executor, and no executor-specific type appears in it.
"""

from __future__ import annotations

import enum
import io
import json
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import polars as pl

__all__ = [
    "END_OF_PARTITION",
    "JSON",
    "AtLeastOnceSink",
    "BoundedSource",
    "CommitDecider",
    "CommitsPositions",
    "EndOfPartition",
    "FencedError",
    "Guarantee",
    "LookupTable",
    "Metrics",
    "MetricsProvider",
    "OperatorState",
    "PollResult",
    "Position",
    "PositionError",
    "ProjectingSource",
    "SharesDecision",
    "SideOutputs",
    "Sink",
    "Source",
    "SourcePartition",
    "SourceShare",
    "StateError",
    "StatefulOperator",
    "StatefulSink",
    "WaitingSource",
    "WorkerSink",
    "int_field",
    "pack",
    "unpack",
]

#: A JSON value (what ``json.dumps`` accepts without help).
JSON: TypeAlias = "bool | int | float | str | Sequence[JSON] | Mapping[str, JSON] | None"

#: What a sink promises across failures (see :class:`Sink`).
Guarantee: TypeAlias = Literal["at-least-once", "exactly-once"]

#: Where a source partition's reader is: a JSON object, small, meaningful to that partition only.
Position: TypeAlias = Mapping[str, JSON]


class PositionError(ValueError):
    """A position a partition cannot seek to: malformed, another source's, or out of range."""


class StateError(ValueError):
    """A state an operator cannot restore: another kind or version, another definition, or
    bytes that are not an operator state."""


# -- sources -------------------------------------------------------------------------------------


class EndOfPartition(enum.Enum):
    """Returned by :meth:`SourcePartition.poll` once a bounded partition has nothing more."""

    END = "end"


END_OF_PARTITION = EndOfPartition.END

PollResult = pl.DataFrame | None | EndOfPartition


class SourcePartition(Protocol):
    """One ordered stream of micro-batches, and where its reader is in it.

    ``poll`` returns the next batch, ``None`` when no data is available right now (an unbounded
    source that is momentarily idle), or :data:`END_OF_PARTITION` forever after the last batch.
    Batches of one partition are delivered in order; every batch has the source's schema.

    Invariant (the round trip every connector is tested for): a reader of the same partition
    of an equal source (another process, a new source object) that is given ``p =
    position()`` by :meth:`seek` delivers exactly the rows that followed ``p``, in order, and
    nothing before. So the rows before ``p`` are the ones already delivered.
    """

    def poll(self) -> PollResult: ...

    def position(self) -> Position:
        """Where this reader is, after every batch returned so far: a JSON object (it survives
        ``json.dumps``/``loads``), small enough to store with every checkpoint."""
        ...

    def seek(self, position: Position) -> None:
        """Continue from ``position`` (one of this partition's :meth:`position` values, maybe of
        an earlier reader): the next poll delivers what followed it. Forward and backward
        seeks are both allowed. Raises :class:`PositionError` for a malformed position, one
        of another source, or one out of the partition's range (e.g. deleted by retention)."""
        ...


@runtime_checkable
class Source(Protocol):
    """A partitioned source of Polars micro-batches."""

    def schema(self) -> pl.Schema | None:
        """The batches' schema, if known before running (enables plan validation)."""
        ...

    def partition_count(self) -> int:
        """How many partitions :meth:`open_partition` accepts (indices ``0..n-1``)."""
        ...

    def open_partition(self, index: int) -> SourcePartition:
        """A fresh reader of partition ``index``, positioned at the source's start."""
        ...

    def close(self) -> None:
        """Release connections and files (after the sinks are closed); idempotent."""
        ...


@runtime_checkable
class WaitingSource(Protocol):
    """A source whose partitions can have nothing for a while (an unbounded log).

    Its partitions' ``poll`` must not wait: the streaming executor polls every partition of
    every source in turn, and when a whole round found nothing it calls ``wait`` instead of
    polling again at once (no busy loop, and no partition waits on another's idleness).
    """

    def wait(self, timeout_s: float) -> bool:
        """Return as soon as a poll of one of its partitions may return something (True), and
        after ``timeout_s`` at the latest (False: still nothing). True at once if a poll would
        return something now."""
        ...


@runtime_checkable
class ProjectingSource(Protocol):
    """A source that can leave columns no step of the plan reads out of its batches (the
    streaming executor tells it which: :func:`strom.engine.projection.read_columns`)."""

    def project(self, columns: Collection[str] | None) -> None:
        """Batches polled from now on need only ``columns`` (None: every column); the source
        may build more of them, never fewer."""
        ...


@runtime_checkable
class BoundedSource(Source, Protocol):
    """A source that can also hand its whole content to the bounded runner as lazy frames."""

    def scan_partition(self, index: int) -> pl.LazyFrame:
        """All of partition ``index``'s rows, in the order :meth:`open_partition` yields them."""
        ...


@runtime_checkable
class SideOutputs(Protocol):
    """A source that writes to sinks of its own (a dead-letter output): an executor takes part
    in their two phases with the plan's sinks, so a checkpoint covers what they were given."""

    def side_sinks(self) -> Sequence[Sink]: ...


def int_field(
    position: object, key: str, owner: str, *, low: int = 0, high: int | None = None
) -> int:
    """``position[key]`` as an int in ``[low, high]``, else :class:`PositionError` naming
    ``owner`` (the partition) and what was wrong; for :meth:`SourcePartition.seek`."""
    if not isinstance(position, Mapping) or key not in position:
        raise PositionError(f"{owner}: {position!r} is not a position of it (no {key!r} field)")
    value = position[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise PositionError(f"{owner}: position field {key!r} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise PositionError(f"{owner}: position {key}={value} is out of range {bounds}")
    return value


# -- sinks ---------------------------------------------------------------------------------------


@runtime_checkable
class Sink(Protocol):
    """Receives result batches, and takes part in checkpoints in two phases.

    Lifecycle: :meth:`open` once, then :meth:`write` any number of times, with
    :meth:`pre_commit` / :meth:`commit` (or :meth:`abort`) at each checkpoint, then
    :meth:`close` once. Checkpoint ids increase.

    - ``pre_commit(c)``: everything written so far is made durable (or, for a two-phase sink,
      staged so that ``commit(c)`` can publish it and ``abort(c)`` discard it). Raising fails
      checkpoint ``c``. Only once it has returned may ``c`` count as taken.
    - ``commit(c)``: publish what ``pre_commit(c)`` staged. Must be idempotent: after a crash,
      recovery commits the last checkpoint again. Writes may come between ``pre_commit(c)``
      and ``commit(c)`` (the checkpoint's files are written meanwhile): they are the next
      checkpoint's, not ``c``'s.
    - ``abort(c)``: discard what was written since the last committed checkpoint, where the sink
      can (a two-phase sink); ``c`` names the failed checkpoint.
    - ``recover(c)``: called once, right after :meth:`open`, when a run resumes from completed
      checkpoint ``c`` (``None``: a run with checkpoints that found none). Publish whatever a
      previous process staged for checkpoints ``<= c`` and did not publish, discard everything
      it staged after ``c``. Idempotent; a crash during ``recover`` is followed by another.

    **At-least-once** (every built-in sink today, :class:`AtLeastOnceSink`): writes are final
    once handed off, ``pre_commit`` only waits until they are durable, ``commit`` has nothing
    to do, and ``abort`` cannot un-write: rows written after the last checkpoint stay and are
    written again when the sources replay from it (duplicates; an upsert converges).
    **Exactly-once** sinks stage what they are given and publish it only by ``commit``/``recover``:
    ``SQLiteSink``/``PostgresSink``/``FileSink`` with ``guarantee="exactly-once"`` (staging
    tables published with the checkpoint id in one transaction; files renamed on commit). They
    need a run with checkpoints: one that calls ``recover`` before the first write (they refuse
    a write before it), and they fence a zombie with :class:`FencedError`.
    """

    @property
    def guarantee(self) -> Guarantee:
        """``"exactly-once"`` only for a two-phase sink (staged writes published by commit)."""
        ...

    def open(self) -> None: ...

    def write(self, batch: pl.DataFrame) -> None: ...

    def pre_commit(self, checkpoint_id: int) -> None: ...

    def commit(self, checkpoint_id: int) -> None: ...

    def abort(self, checkpoint_id: int) -> None: ...

    def recover(self, checkpoint_id: int | None) -> None: ...

    def close(self) -> None: ...


class FencedError(RuntimeError):
    """A two-phase sink's ``pre_commit``/``commit`` in a process that another one has recovered
    the sink in since (a zombie): nothing this process staged can be published any more."""


@runtime_checkable
class WorkerSink(Protocol):
    """A two-phase sink whose staged data is keyed by its writer. When several workers run one
    plan (each with an equal sink writing the same table or directory), each worker's executor
    calls ``set_worker(index)`` before :meth:`Sink.open`, so that the workers' staged data,
    recovery and fencing stay apart. A run that changes its worker count between restarts
    recovers only the writers it has again."""

    def set_worker(self, index: int) -> None: ...


@runtime_checkable
class CommitDecider(Protocol):
    """A two-phase sink whose own commit *is* a checkpoint's decision (a Kafka transaction
    that also carries the sources' offsets): a run has at most one.

    A checkpoint's order with a decider: every sink's ``pre_commit(c)``, the checkpoint
    written, then the decider's ``commit(c)`` (the point of no return), then every other
    sink's ``commit(c)``. A crash before the decider's commit leaves ``c`` undecided: recovery
    restores the checkpoint the decider reports committed, not the latest one written.
    Without a decider, the checkpoint being written completely is the decision.

    A sink class may offer both guarantees: only a sink whose :attr:`Sink.guarantee` is
    ``"exactly-once"`` decides (an at-least-once ``KafkaSink`` is an ordinary sink).
    """

    def committed_checkpoint(self) -> int | None:
        """The last checkpoint whose commit this sink made durable (possibly by an earlier
        process), or None if none ever was; called after :meth:`Sink.open`, before
        :meth:`Sink.recover`."""
        ...


@runtime_checkable
class CommitsPositions(Protocol):
    """A :class:`CommitDecider` that also commits the sources' positions with its decision
    (an exactly-once Kafka sink sends a ``KafkaSource``'s offsets to its transaction, so the
    source's consumer group shows what the pipeline has committed, lag included)."""

    def stage_positions(
        self, checkpoint_id: int, positions: Sequence[tuple[Source, Mapping[int, Position]]]
    ) -> None:
        """Checkpoint ``checkpoint_id``'s source positions: every source of the run with its
        partitions' positions by partition number (a worker of a multi-worker run: the
        partitions it reads, numbered as in the source it shares), handed over after the
        snapshot and before any ``pre_commit(checkpoint_id)``, to be committed by the
        decider's ``commit(checkpoint_id)``."""
        ...


@runtime_checkable
class SharesDecision(Protocol):
    """A :class:`CommitDecider` whose decision other sinks may share (the writers of one Kafka
    transaction: a worker's repartition writers and its exactly-once KafkaSink): deciders
    whose :meth:`decision` is the same object are one decision, committed by the first."""

    def decision(self) -> object: ...


@runtime_checkable
class SourceShare(Protocol):
    """A worker's share of a source: its partitions ``partitions`` of ``source`` (partition
    ``i`` of the share is ``partitions[i]`` of the source)."""

    source: Source
    partitions: list[int]


class AtLeastOnceSink:
    """The at-least-once defaults of :class:`Sink`: subclasses implement :meth:`write`, and
    override :meth:`pre_commit` if a write can return before its rows are durable (buffers,
    asynchronous producers). ``commit`` and ``abort`` do nothing (see :class:`Sink`)."""

    guarantee: Guarantee = "at-least-once"

    def open(self) -> None:
        """Nothing to prepare."""

    def write(self, batch: pl.DataFrame) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement write()")

    def pre_commit(self, checkpoint_id: int) -> None:
        """Every write is durable when it returns: nothing to wait for."""

    def commit(self, checkpoint_id: int) -> None:
        """Nothing is staged: written rows are already published."""

    def abort(self, checkpoint_id: int) -> None:
        """Written rows cannot be taken back; a replay writes them again."""

    def recover(self, checkpoint_id: int | None) -> None:
        """Nothing was staged by an earlier process: nothing to publish or discard."""

    def close(self) -> None:
        """Nothing to release."""


@runtime_checkable
class LookupTable(Protocol):
    """A keyed table that a stream joins against (``Stream.lookup_join``), e.g. SQLite.

    ``key`` names the table's key column. :meth:`lookup` answers one request for many keys, so
    executors can batch a micro-batch's distinct keys into one query; it returns at most one
    row per key (the key column plus the value columns) and omits keys that are not in the
    table. Implementations must be safe to call repeatedly; they may reflect changes made to
    the table between calls.
    """

    key: str

    def schema(self) -> pl.Schema | None:
        """The table's columns (key included), if readable before running."""
        ...

    def lookup(self, keys: pl.Series) -> pl.DataFrame:
        """The rows whose key is in ``keys`` (distinct, non-null), in any order."""
        ...


# -- metrics -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """One component's counters at one moment (an operator, a source or a sink).

    ``rows_in``/``rows_out``: rows received and passed on (a source: records read and rows
    delivered; a sink: rows received and rows written, or acknowledged). ``late_rows``: rows
    sent to a late output. ``dead_letters``: undecodable records routed aside. ``watermark``:
    event-time progress in ms (``MIN_WATERMARK`` before any; None where there is none).
    ``state_size``: entries held (windows, keys, rows; None for stateless components). ``lag``:
    records behind the newest available (Kafka: high watermark - position), None if unknown.
    ``label`` says what the component is (``KafkaSource('sensors')``); ``detail`` holds the
    component's own counters (a lookup join's queries, a producer's failures).
    """

    rows_in: int = 0
    rows_out: int = 0
    late_rows: int = 0
    dead_letters: int = 0
    watermark: int | None = None
    state_size: int | None = None
    lag: int | None = None
    label: str = ""
    detail: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class MetricsProvider(Protocol):
    """Anything that reports :class:`Metrics`: operators, and the connectors that know more than
    an executor counts (for a source or sink without it, the executor's own counts stand)."""

    def metrics(self) -> Metrics: ...


# -- operator state ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OperatorState:
    """A stateful operator's whole state: named columnar frames plus small JSON metadata.

    ``kind`` and ``version`` name the layout (``"time_window"``, 1): an operator refuses any
    other. Frames hold everything there is much of (one row per window, key, timer or held
    row), in Arrow types where the state is typed; ``meta`` holds the little rest (watermarks,
    sequence numbers, the operator's definition, to refuse a state of another one) and must be
    JSON. A state is a copy: it shares nothing mutable with its operator.

    **Values only Python knows** (a user's ``ValueState``, the accumulators of a
    ``count_distinct``) are stored one per row in a Binary column, encoded by
    :mod:`strom.engine.values` as plain data (None, bool, int, float, str, bytes, list, tuple,
    dict, set, datetime, date, time, timedelta, Decimal), never pickled: restoring a state
    never runs code, whoever wrote the bytes. Anything else fails the snapshot, naming its type.

    Bytes (:meth:`to_bytes`): see :func:`pack`; each frame is an Arrow IPC file.
    """

    kind: str
    version: int
    frames: Mapping[str, pl.DataFrame] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            json.dumps(self.meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StateError(f"{self.kind} state: metadata is not JSON: {exc}") from exc

    def check(self, kind: str, version: int, owner: str) -> None:
        """Raise :class:`StateError` unless this is a ``kind`` state of ``version``."""
        if (self.kind, self.version) != (kind, version):
            raise StateError(
                f"{owner} restores {kind} state version {version}, not {self.kind} state "
                f"version {self.version} (a state of another operator or strom version)"
            )

    def frame(self, name: str) -> pl.DataFrame:
        try:
            return self.frames[name]
        except KeyError:
            raise StateError(f"{self.kind} state has no frame {name!r}") from None

    def equals(self, other: OperatorState) -> bool:
        """Same kind, version, metadata and frames (values and types)."""
        mine = (self.kind, self.version, dict(self.meta))
        if mine != (other.kind, other.version, dict(other.meta)):
            return False
        if self.frames.keys() != other.frames.keys():
            return False
        return all(
            f.schema == other.frames[n].schema and f.equals(other.frames[n])
            for n, f in self.frames.items()
        )

    def to_bytes(self) -> bytes:
        return b"".join(self.to_parts())

    def to_parts(self) -> list[Buffer]:
        """:meth:`to_bytes` as consecutive pieces, not joined (a writer writes them in turn:
        a state of a gigabyte is then not copied once more, holding the GIL, to be written)."""
        blobs: list[Buffer] = []
        for frame in self.frames.values():
            buffer = io.BytesIO()
            frame.write_ipc(buffer)
            blobs.append(buffer.getbuffer())
        header = {"kind": self.kind, "version": self.version, "meta": dict(self.meta),
                  "frames": list(self.frames)}  # fmt: skip
        return pack_parts(_STATE_MAGIC, header, blobs)

    @classmethod
    def from_bytes(cls, data: Buffer) -> OperatorState:
        """The state :meth:`to_bytes` made. Frames are read in place (Arrow IPC read with no
        copy), so they hold on to ``data``; restoring copies them into the operator's own
        arrays."""
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]  # lazy: ~30 MiB

        header, blobs = unpack(_STATE_MAGIC, data, "an operator state")
        try:
            names = header["frames"]
            frames = {n: _read_frame(b) for n, b in zip(names, blobs, strict=True)}
            return cls(str(header["kind"]), int(header["version"]), frames, header["meta"])
        except (KeyError, TypeError, ValueError, pl.exceptions.PolarsError, OSError,
                pa.ArrowException) as exc:  # fmt: skip
            raise StateError(f"not a readable operator state: {exc}") from exc


def _read_frame(blob: memoryview) -> pl.DataFrame:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    frame = pl.from_arrow(pa.ipc.open_file(pa.py_buffer(blob)).read_all())
    assert isinstance(frame, pl.DataFrame)
    return frame


@runtime_checkable
class StatefulOperator(Protocol):
    """An operator whose output depends on what it has seen: windows, process functions, joins.

    Invariant (property-tested for every kind): an operator that processed a prefix of its
    input and was snapshotted, and a fresh operator of the same definition that restored the
    snapshot and processed the rest, together emit exactly what one uninterrupted operator
    emits. Snapshots are taken between messages (no result is half-emitted). A lookup join's
    cache is a cache, not state: it refills after a restore.
    """

    name: str

    def snapshot(self) -> OperatorState:
        """A copy of everything the operator holds, including its watermarks."""
        ...

    def restore(self, state: OperatorState) -> None:
        """Replace everything with ``state`` (:class:`StateError` if it is not one of this
        operator's: another kind, version or definition)."""
        ...

    def state_size(self) -> int:
        """How many entries it holds (windows, keys, rows), for metrics."""
        ...


@runtime_checkable
class StatefulSink(Protocol):
    """A sink holding state of the run's own that a checkpoint must keep (a repartition
    writer: its writer's event-time progress over the partitions upstream of it). The
    executor snapshots and restores it with the stateful operators, under the sink's operator
    id; the same invariant holds."""

    def snapshot_state(self) -> OperatorState: ...

    def restore_state(self, state: OperatorState) -> None: ...

    def rebase_clock(self, shift_ms: float) -> None:
        """Move processing-time values by ``shift_ms`` (see ``StreamingExecutor.restore``)."""
        ...


# -- bytes ---------------------------------------------------------------------------------------

_STATE_MAGIC = b"STROMOPS"
#: Bytes, or a view of them (states are written and read in pieces, not copied).
Buffer: TypeAlias = bytes | bytearray | memoryview
_HEADER = struct.Struct("<8sII")  # magic, header length, blob count


def pack(magic: bytes, header: Mapping[str, Any], blobs: Sequence[Buffer]) -> bytes:
    """``magic`` (8 bytes), header length and blob count (u32 LE), the JSON ``header``, then each
    blob as its length (u64 LE) and bytes: states and snapshots as one self-describing blob."""
    return b"".join(pack_parts(magic, header, blobs))


def pack_parts(magic: bytes, header: Mapping[str, Any], blobs: Sequence[Buffer]) -> list[Buffer]:
    """:func:`pack`'s bytes as pieces to write one after the other (the blobs not copied)."""
    text = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    parts: list[Buffer] = [_HEADER.pack(magic, len(text), len(blobs)), text]
    for blob in blobs:
        parts += [struct.pack("<Q", memoryview(blob).nbytes), blob]
    return parts


def unpack(magic: bytes, data: Buffer, what: str) -> tuple[dict[str, Any], list[memoryview]]:
    """The header and blobs :func:`pack` made (the blobs are views of ``data``, not copies);
    :class:`StateError` for anything else."""
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size or bytes(view[:8]) != magic:
        raise StateError(f"these bytes are not {what} (they do not start with {magic!r})")
    _, size, count = _HEADER.unpack_from(view)
    at = _HEADER.size + size
    try:
        header = json.loads(bytes(view[_HEADER.size : at]))
        blobs = []
        for _ in range(count):
            (length,) = struct.unpack_from("<Q", view, at)
            at += 8
            if at + length > len(view):
                raise ValueError("truncated")
            blobs.append(view[at : at + length])
            at += length
    except (ValueError, struct.error) as exc:
        raise StateError(f"{what}: truncated or damaged bytes ({exc})") from exc
    if not isinstance(header, dict) or at != len(view):
        raise StateError(f"{what}: damaged bytes (bad header or trailing data)")
    return header, blobs
