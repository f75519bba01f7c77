"""What sources and sinks promise the engine; connectors implement these protocols.

The plan holds sources and sinks as opaque objects: it never reads or writes through them.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

import polars as pl


class EndOfPartition(enum.Enum):
    """Returned by :meth:`SourcePartition.poll` once a bounded partition has nothing more."""

    END = "end"


END_OF_PARTITION = EndOfPartition.END

PollResult = pl.DataFrame | None | EndOfPartition


class SourcePartition(Protocol):
    """One ordered stream of micro-batches.

    ``poll`` returns the next batch, ``None`` when no data is available right now (an unbounded
    source that is momentarily idle), or :data:`END_OF_PARTITION` forever after the last batch.
    Batches of one partition are delivered in order; every batch has the source's schema.
    """

    def poll(self) -> PollResult: ...


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
        """A fresh reader of partition ``index``, positioned at its beginning."""
        ...

    # A source may also define ``close()``: the streaming executor calls it after the sinks,
    # and ``wait(timeout_s)`` (see :class:`WaitingSource`) if its partitions can be idle.


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
class BoundedSource(Source, Protocol):
    """A source that can also hand its whole content to the bounded runner as lazy frames."""

    def scan_partition(self, index: int) -> pl.LazyFrame:
        """All of partition ``index``'s rows, in the order :meth:`open_partition` yields them."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Receives result batches. ``open`` before the first write, ``close`` after the last."""

    def open(self) -> None: ...

    def write(self, batch: pl.DataFrame) -> None: ...

    def close(self) -> None: ...


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
