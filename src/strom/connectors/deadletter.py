"""The dead-letter output of a source: undecodable records, with why and where they came from.

A source never drops a record it cannot decode. With a dead-letter :class:`~strom.pipeline.Sink`
each such record becomes one row of :data:`DEAD_LETTER_SCHEMA`; without one it is logged (one
warning per batch) and counted, so it still does not vanish silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import polars as pl

from strom.engine.contracts import CommitDecider, Guarantee, SharesDecision, Sink

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "DeadLetterOutput",
    "DecidingDeadLetterOutput",
    "batch_dead_letters",
    "dead_letter_frame",
    "dead_letter_output",
]

log = logging.getLogger("strom.connectors")

#: One row per undecodable record: why, where (topic, partition, offset), its timestamp (ms,
#: null if the record has none) and its value's bytes exactly as stored (null for a null value).
DEAD_LETTER_SCHEMA = pl.Schema(
    {
        "reason": pl.String(),
        "topic": pl.String(),
        "partition": pl.Int32(),
        "offset": pl.Int64(),
        "timestamp": pl.Int64(),
        "raw": pl.Binary(),
    }
)


def dead_letter_frame(
    topic: str,
    partition: int,
    reasons: Sequence[str],
    offsets: Sequence[int],
    timestamps: Sequence[int | None],
    raws: Sequence[bytes | None],
) -> pl.DataFrame:
    """Dead-letter rows for records of one partition (all sequences have one item per record)."""
    n = len(reasons)
    return pl.DataFrame(
        {
            "reason": list(reasons),
            "topic": [topic] * n,
            "partition": [partition] * n,
            "offset": list(offsets),
            "timestamp": list(timestamps),
            "raw": list(raws),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def batch_dead_letters(
    batch: pl.DataFrame, reason: str, timestamp: pl.Expr | None = None
) -> pl.DataFrame:
    """Dead-letter rows for decoded rows that a step downstream could not process (a model
    that raised on their batch): one per row, all with ``reason``. Topic, partition and offset
    come from a ``KafkaSource``'s ``_topic``/``_partition``/``_offset`` columns when the rows
    still have them, the timestamp from ``timestamp`` (epoch ms), ``raw`` is the row as JSON."""

    def column(name: str, dtype: pl.DataType) -> pl.Expr:
        if name in batch.columns:
            return pl.col(name).cast(dtype, strict=False)
        return pl.lit(None, dtype=dtype)

    return batch.select(
        pl.lit(reason, dtype=pl.String).alias("reason"),
        column("_topic", pl.String()).alias("topic"),
        column("_partition", pl.Int32()).alias("partition"),
        column("_offset", pl.Int64()).alias("offset"),
        (pl.lit(None) if timestamp is None else timestamp).cast(pl.Int64).alias("timestamp"),
        pl.struct(pl.all()).struct.json_encode().cast(pl.Binary).alias("raw"),
    )


class DeadLetterOutput:
    """Routes dead-letter rows to ``sink`` (opened on first use), or logs and counts them.

    A :class:`~strom.engine.contracts.Sink` itself (its source lists it in ``side_sinks()``):
    checkpoints pre-commit and commit it with the plan's sinks, so the dead letters of the
    records before a source's checkpointed position are as durable as the results. Its
    guarantee is the dead-letter sink's (at-least-once for every built-in sink).
    """

    def __init__(self, sink: Sink | None, what: str) -> None:
        self.sink = sink
        self.what = what
        self.count = 0
        self._open = False

    @property
    def guarantee(self) -> Guarantee:
        """The dead-letter sink's guarantee (at-least-once when dead letters are only logged)."""
        return "at-least-once" if self.sink is None else self.sink.guarantee

    def write(self, rows: pl.DataFrame) -> None:
        if rows.height == 0:
            return
        self.count += rows.height
        if self.sink is None:
            first = rows.row(0, named=True)
            log.warning(
                "%s: %d undecodable record(s) and no dead_letter sink (counted in metrics); "
                "first at partition %s offset %s: %s",
                self.what,
                rows.height,
                first["partition"],
                first["offset"],
                first["reason"],
            )
            return
        if not self._open:
            self.sink.open()
            self._open = True
        self.sink.write(rows)

    def open(self) -> None:
        """Nothing yet: the sink is opened by the first dead letter."""

    def pre_commit(self, checkpoint_id: int) -> None:
        if self._open and self.sink is not None:
            self.sink.pre_commit(checkpoint_id)

    def commit(self, checkpoint_id: int) -> None:
        if self._open and self.sink is not None:
            self.sink.commit(checkpoint_id)

    def abort(self, checkpoint_id: int) -> None:
        if self._open and self.sink is not None:
            self.sink.abort(checkpoint_id)

    def recover(self, checkpoint_id: int | None) -> None:
        """Open the sink now if it may hold staged dead letters of an earlier process."""
        if self.sink is not None:
            if not self._open:
                self.sink.open()
                self._open = True
            self.sink.recover(checkpoint_id)

    def close(self) -> None:
        """Close the sink if it was opened (it is reopened by a later write)."""
        if self._open and self.sink is not None:
            self._open = False
            self.sink.close()


class DecidingDeadLetterOutput(DeadLetterOutput):
    """The dead-letter output of a sink that decides checkpoints (an exactly-once
    ``KafkaSink``: its transaction's commit is the decision, so it must be the run's decider,
    or share the decider's transaction, never be committed after the decision)."""

    def committed_checkpoint(self) -> int | None:
        assert isinstance(self.sink, CommitDecider)
        if not self._open:
            assert self.sink is not None
            self.sink.open()
            self._open = True
        return self.sink.committed_checkpoint()

    def decision(self) -> object:
        return self.sink.decision() if isinstance(self.sink, SharesDecision) else self.sink


def dead_letter_output(sink: Sink | None, what: str) -> DeadLetterOutput:
    """The dead-letter output for ``sink`` (one that decides checkpoints, if ``sink`` does)."""
    if isinstance(sink, CommitDecider) and sink.guarantee == "exactly-once":
        return DecidingDeadLetterOutput(sink, what)
    return DeadLetterOutput(sink, what)
