"""A synthetic source: a user function generates each partition's micro-batches."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from strom.engine.contracts import END_OF_PARTITION, PollResult, Position, int_field

GenerateFn = Callable[[int, int], pl.DataFrame | None]


class GeneratorSource:
    """Partition ``p``'s ``i``-th poll returns ``generate(p, i)``.

    ``generate`` returns a DataFrame (one micro-batch) or ``None`` ("nothing right now"; the poll
    still counts). With ``batches=n`` each partition ends after ``n`` polls, and the source is
    bounded (the bounded runner concatenates ``generate(p, 0..n-1)``); with ``batches=None`` it
    never ends (run it with ``StreamingExecutor.step`` or ``run(max_rounds=...)``).

    **Positions:** ``{"batch": i}``, the number of polls so far: a reader seeked to it calls
    ``generate(p, i)`` next. Replayable exactly when ``generate`` is a pure function of its
    arguments (a restored run regenerates the same batches); otherwise none.
    """

    def __init__(
        self,
        generate: GenerateFn,
        *,
        partitions: int = 1,
        batches: int | None = None,
        schema: pl.Schema | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError("GeneratorSource needs partitions >= 1")
        if batches is not None and batches < 0:
            raise ValueError("batches must be >= 0 (or None for an unbounded source)")
        self.generate = generate
        self.partitions = partitions
        self.batches = batches
        self._schema = schema

    def schema(self) -> pl.Schema | None:
        return self._schema

    def partition_count(self) -> int:
        return self.partitions

    def open_partition(self, index: int) -> _GeneratorPartition:
        return _GeneratorPartition(self, index)

    def scan_partition(self, index: int) -> pl.LazyFrame:
        if self.batches is None:
            raise ValueError("an unbounded GeneratorSource (batches=None) cannot be scanned whole")
        frames = [self._conform(self.generate(index, i)) for i in range(self.batches)]
        present = [f for f in frames if f is not None]
        if not present:
            return pl.LazyFrame(schema=self._schema)
        return pl.concat(present, how="vertical").lazy()

    def _conform(self, frame: pl.DataFrame | None) -> pl.DataFrame | None:
        if frame is None:
            return None
        if not isinstance(frame, pl.DataFrame):
            raise TypeError(f"the generator returned {type(frame).__name__}, not a DataFrame")
        if self._schema is None:
            return frame
        return frame.select(pl.col(n).cast(t) for n, t in self._schema.items())

    def close(self) -> None:
        """Nothing to release."""


class _GeneratorPartition:
    def __init__(self, source: GeneratorSource, index: int) -> None:
        self._source = source
        self._index = index
        self._next = 0

    def poll(self) -> PollResult:
        limit = self._source.batches
        if limit is not None and self._next >= limit:
            return END_OF_PARTITION
        batch = self._source.generate(self._index, self._next)
        self._next += 1
        return self._source._conform(batch)

    def position(self) -> Position:
        return {"batch": self._next}

    def seek(self, position: Position) -> None:
        owner = f"GeneratorSource partition {self._index}"
        self._next = int_field(position, "batch", owner, high=self._source.batches)
