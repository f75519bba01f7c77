"""In-memory source and sink: the harness for testing pipelines without servers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from strom.engine.contracts import (
    END_OF_PARTITION,
    AtLeastOnceSink,
    PollResult,
    Position,
    int_field,
)

BatchLike = pl.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None


class MemorySource:
    r"""Partitions of batches held in memory.

    Each partition is a list whose items are delivered one per poll, in order: a DataFrame, a
    list of dict rows, a single dict row, or ``None`` for "no data right now" (to exercise idle
    partitions). Every batch is converted to one schema: ``schema`` if given, else the first
    batch's.

    **Positions:** ``{"batch": n}``, the number of items (batches and ``None``\ s) polled.
    Replayable and deterministic: every reader of a partition sees exactly the same batches in
    the same order, and one seeked to a position continues right after it.
    """

    def __init__(
        self, partitions: Sequence[Sequence[BatchLike]], *, schema: pl.Schema | None = None
    ) -> None:
        if not partitions:
            raise ValueError("MemorySource needs at least one partition (a list of batches)")
        self._schema = schema
        self._partitions: list[list[pl.DataFrame | None]] = [
            [self._to_frame(item) for item in partition] for partition in partitions
        ]

    def _to_frame(self, item: BatchLike) -> pl.DataFrame | None:
        if item is None:
            return None
        if isinstance(item, pl.DataFrame):
            frame = item
        else:
            rows = [item] if isinstance(item, Mapping) else list(item)
            frame = pl.from_dicts(rows, schema=self._schema, infer_schema_length=None)
        if self._schema is None:
            if frame.width == 0:
                return frame
            self._schema = frame.schema
        return frame.select(pl.col(n).cast(t) for n, t in self._schema.items())

    def schema(self) -> pl.Schema | None:
        return self._schema

    def partition_count(self) -> int:
        return len(self._partitions)

    def open_partition(self, index: int) -> _MemoryPartition:
        return _MemoryPartition(self._partitions[index], f"MemorySource partition {index}")

    def scan_partition(self, index: int) -> pl.LazyFrame:
        frames = [f for f in self._partitions[index] if f is not None and f.width]
        if not frames:
            return pl.LazyFrame(schema=self._schema)
        return pl.concat(frames, how="vertical").lazy()

    def close(self) -> None:
        """Nothing to release."""


class _MemoryPartition:
    def __init__(self, batches: list[pl.DataFrame | None], owner: str) -> None:
        self._batches = batches
        self._owner = owner
        self._next = 0

    def poll(self) -> PollResult:
        if self._next >= len(self._batches):
            return END_OF_PARTITION
        batch = self._batches[self._next]
        self._next += 1
        return batch

    def position(self) -> Position:
        return {"batch": self._next}

    def seek(self, position: Position) -> None:
        self._next = int_field(position, "batch", self._owner, high=len(self._batches))


class MemorySink(AtLeastOnceSink):
    """Collects every batch it receives, in order.

    **Delivery guarantee: at-least-once**, for the life of the process: everything the executor
    emits, in emission order (a batch is in :attr:`batches` when ``write`` returns, so
    ``pre_commit`` has nothing to wait for); nothing survives the process. Read results with
    :meth:`to_frame` or :attr:`batches`.
    """

    def __init__(self) -> None:
        self.batches: list[pl.DataFrame] = []
        self.opened = False
        self.closed = False

    def open(self) -> None:
        self.opened = True

    def write(self, batch: pl.DataFrame) -> None:
        self.batches.append(batch)

    def close(self) -> None:
        self.closed = True

    def to_frame(self) -> pl.DataFrame:
        """All rows received, concatenated in arrival order (empty frame if none)."""
        if not self.batches:
            return pl.DataFrame()
        return pl.concat(self.batches, how="vertical")
