"""What every window operator shares: event time, watermarks, late output, result batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from strom.engine.constants import MAX_WATERMARK, MIN_WATERMARK, PART, SEQ, TS
from strom.engine.contracts import OperatorState
from strom.engine.schemas import window_schema
from strom.pipeline.plan import WindowAggNode
from strom.pipeline.windows import event_time_ms
from strom.runtime.operators import Operator, Runs, split_runs
from strom.runtime.snapshots import check_definition, seq_from_meta, seq_to_meta
from strom.runtime.watermarks import WatermarkTracker
from strom.runtime.windows.accumulators import Accumulators

#: Held rows merge at the latest when this many are held (a watermark that stands still, one
#: partition not moving on, would otherwise hold back every other partition's rows).
MAX_PENDING_ROWS = 65_536


class WindowOperatorBase(Operator):
    """A keyed window aggregation: results go to :attr:`outputs`, late rows to :attr:`late_outputs`.

    Subclasses implement :meth:`_process` (merge one batch, which already carries ``TS``,
    ``SEQ`` and ``PART`` columns, at a given watermark), :meth:`_fire` (emit windows the
    watermark has completed, purge expired state), :meth:`_oldest_end` and
    :meth:`_merge_before_fire`. Results are emitted after each batch and after each watermark
    advance; progress is then forwarded to both outputs, so operators downstream of a window
    keep their watermarks.

    **Deferred merging.** A batch none of whose rows is late or in a window the watermark has
    completed (its earliest window ends after the watermark) changes no result until a window
    it touches fires, so in ``final`` mode it is held back (:attr:`_pending`) and merged with
    the batches after it, from any partition, in one :meth:`_process` call: a trickle of a few
    rows per partition and round costs the operator's dozen Polars queries once per fire
    instead of once per batch. Invariant: every held row's earliest window ends after the
    current watermark, so merging at any moment before the watermark reaches it gives the
    state an immediate merge would have; the held rows merge before anything that could tell
    the difference: a watermark advance reaching their earliest end (or, for sessions, firing
    or purging anything), a batch that cannot be held, a snapshot, the end of the run, or
    :data:`MAX_PENDING_ROWS` held rows. Results are the same rows in the same order as
    merging each batch on arrival (float sums may round differently, as with other batch
    sizes). Aggregations ordered by ``(event time, partition, position)`` (first/last) merge
    the held rows one partition at a time.
    """

    def __init__(
        self, name: str, node: WindowAggNode, ts_column: str, tracker: WatermarkTracker
    ) -> None:
        super().__init__(name)
        self.node = node
        self.keys = node.keys
        self.lateness = node.allowed_lateness_ms
        self.update_mode = node.emit == "update"
        self.ts_column = ts_column
        self.tracker = tracker
        self.acc = Accumulators(node.aggs)
        self.late_outputs: list[Operator] = []
        self._seq: dict[int, int] = {}
        self._input_schema: pl.Schema | None = None
        self._out_schema: pl.Schema | None = None
        self._rows: list[list[Any]] = []
        self._frames: list[pl.DataFrame] = []
        #: held batches: (partition, first sequence number, batch), in arrival order
        self._pending: list[tuple[int, int, pl.DataFrame]] = []
        self._pending_rows = 0
        #: a lower bound of every held row's earliest window end (> the watermark)
        self._pending_end = MAX_WATERMARK
        self._defers = not self.update_mode  # update mode emits after every batch
        #: rows of merged batches (:meth:`on_segments`) waiting for their partition's progress
        self._arriving: dict[int, list[pl.DataFrame]] = {}

    @property
    def watermark(self) -> int:
        return self.tracker.current

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        self._arrive(partition, batch)

    def on_segments(self, batch: pl.DataFrame, runs: Runs) -> None:
        """Each partition's rows arrive just before its progress message (as a batch of its
        own would have, between the previous partition's progress and its own)."""
        self.counters.rows_in += batch.height
        for partition, part in split_runs(batch, runs):
            self._arriving.setdefault(partition, []).append(part)

    def _arrive(self, partition: int, batch: pl.DataFrame) -> None:
        """Batch ``batch`` of ``partition`` arrives: held, or merged now (after the held ones)."""
        if batch.height == 0:
            return
        if self._input_schema is None:
            self._set_input_schema(batch.schema)
        ts = batch.get_column(self.ts_column)
        if ts.null_count():
            raise ValueError(
                f"{self.name}: {ts.null_count()} rows have a null event time in column "
                f"{self.ts_column!r}; filter or fill them before the window"
            )
        start = self._seq.get(partition, 0)
        self._seq[partition] = start + batch.height
        watermark = self.watermark
        if self._defers:
            oldest = self._oldest_end(_min_event_ms(ts))
            if oldest > watermark:  # nothing late, nothing complete: no result can change yet
                self._pending.append((partition, start, batch))
                self._pending_rows += batch.height
                self._pending_end = min(self._pending_end, oldest)
                if self._pending_rows >= MAX_PENDING_ROWS:
                    self._merge_pending(watermark)
                return
        self._merge_pending(watermark)  # the batches before this one first
        self._process(partition, self._framed([(partition, start, batch)]), watermark)
        self._flush(partition)

    def _framed(self, batches: list[tuple[int, int, pl.DataFrame]]) -> pl.DataFrame:
        """``batches`` as one frame with the ``TS``, ``SEQ`` and ``PART`` columns."""
        if len(batches) == 1:
            partition, start, batch = batches[0]
            return batch.with_columns(
                event_time_ms(self.ts_column, batch.schema[self.ts_column]).alias(TS),
                (pl.int_range(pl.len(), dtype=pl.Int64) + start).alias(SEQ),
                pl.lit(partition, dtype=pl.Int64).alias(PART),
            )
        heights = np.array([b.height for _, _, b in batches], np.int64)
        starts = np.array([s for _, s, _ in batches], np.int64)
        # each batch's sequence numbers run on from its start: a ramp minus each batch's offset
        offsets = np.repeat(starts - (np.cumsum(heights) - heights), heights)
        seq = np.arange(int(heights.sum()), dtype=np.int64) + offsets
        parts = np.repeat(np.array([p for p, _, _ in batches], np.int64), heights)
        merged = pl.concat([b for _, _, b in batches], how="vertical", rechunk=True)
        return merged.with_columns(
            event_time_ms(self.ts_column, merged.schema[self.ts_column]).alias(TS),
            pl.Series(SEQ, seq),
            pl.Series(PART, parts),
        )

    def _merge_pending(self, watermark: int) -> None:
        """Merge the held batches into the state (at ``watermark``, which their rows are all
        ahead of: nothing is late and nothing is emitted). All partitions' rows go in one
        :meth:`_process` call, unless an aggregation orders by partition: then one a partition."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._pending_rows, self._pending_end = 0, MAX_WATERMARK
        if self.acc.needs_order:
            by_partition: dict[int, list[tuple[int, int, pl.DataFrame]]] = {}
            for item in pending:
                by_partition.setdefault(item[0], []).append(item)
            groups = [by_partition[p] for p in sorted(by_partition)]
        else:
            groups = [pending]
        for group in groups:
            try:
                framed = self._framed(group)
            except pl.exceptions.SchemaError:  # batches of other dtypes: each as it is
                for item in group:
                    self._process(item[0], self._framed([item]), watermark)
                continue
            self._process(group[0][0], framed, watermark)
        assert not self._rows and not self._frames, "held rows emit nothing"

    def _set_input_schema(self, schema: pl.Schema | None) -> None:
        self._input_schema = schema
        if schema is not None:
            self._out_schema = window_schema(self.keys, self.node.aggs, schema)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        if self._arriving:
            for part in self._arriving.pop(partition, ()):
                self._arrive(partition, part)
        before, after = self.tracker.progress(partition, max_event_time, now_ms, finished)
        self.counters.watermark = after
        if after > before:
            if self._pending and self._merge_before_fire(after):
                self._merge_pending(before)
            self._fire(after)
            self._flush(partition)
        # results and late rows of this message are out before downstream sees the progress
        for out in (*self.outputs, *self.late_outputs):
            out.on_progress(partition, max_event_time, now_ms, finished)

    def _process(self, partition: int, batch: pl.DataFrame, watermark: int) -> None:
        """Merge ``batch`` (rows of ``partition``, or of several when held rows merge: see
        its ``PART`` column), judging lateness and completeness against ``watermark``."""
        raise NotImplementedError

    def _fire(self, watermark: int) -> None:
        raise NotImplementedError

    def _oldest_end(self, event_time: int) -> int:
        """A lower bound of the end of every window a row at ``event_time`` (ms) can fall in
        (or, for sessions, change). By default none is known: no batch is held."""
        return MIN_WATERMARK

    def _merge_before_fire(self, watermark: int) -> bool:
        """Whether the held rows must merge before the watermark moves to ``watermark``: it
        reaches their earliest window end (sessions: or fires or purges anything)."""
        return self._pending_end <= watermark

    def state_size(self) -> int:
        """Windows (or sessions) currently held, plus rows held for a later merge (each will
        be in one at most)."""
        return self._held_windows() + self._pending_rows

    def _held_windows(self) -> int:
        raise NotImplementedError

    def snapshot(self) -> OperatorState:
        """The operator's state (held rows merged first: a snapshot holds only windows)."""
        assert not self._arriving, "snapshots are taken between rounds"
        self._merge_pending(self.watermark)
        return self._snapshot()

    def _snapshot(self) -> OperatorState:
        raise NotImplementedError

    # -- snapshots: what every window operator's state holds besides its windows ---------------

    def definition(self) -> dict[str, Any]:
        """What a state of this operator depends on (a state of another definition is refused)."""
        spec = self.node.window
        return {
            "keys": list(self.keys),
            "window": {"type": type(spec).__name__, **dataclasses.asdict(spec)},
            # each aggregation whole (kind, column, name, parameters): a state of a sum is no
            # state of a max of the same name
            "aggs": [
                [type(a).__name__, *map(_plain, dataclasses.astuple(a))] for a in self.node.aggs
            ],
            "timestamp": self.ts_column,
            "allowed_lateness_ms": self.lateness,
            "emit": self.node.emit,
        }

    def _state(
        self, kind: str, frames: Mapping[str, pl.DataFrame], meta: Mapping[str, Any]
    ) -> OperatorState:
        """A state of ``kind`` holding ``frames`` and ``meta`` plus the input schema (as an empty
        frame), the sequence counters and the watermarks."""
        assert not self._rows and not self._frames, "snapshots are taken between messages"
        all_frames = dict(frames)
        if self._input_schema is not None:
            all_frames["input"] = pl.DataFrame(schema=self._input_schema)
        common = {
            "definition": self.definition(),
            "seq": seq_to_meta(self._seq),
            "watermarks": self.tracker.snapshot(),
        }
        return OperatorState(kind, 1, all_frames, {**common, **meta})

    def rebase_clock(self, shift_ms: float) -> None:
        self.tracker.rebase_clock(shift_ms)

    def _restore_common(self, kind: str, state: OperatorState) -> None:
        """Check ``state`` is this operator's, then restore what :meth:`_state` added (the
        window state is then empty, built for the restored input schema)."""
        state.check(kind, 1, self.name)
        check_definition(state, self.definition(), self.name)
        self.tracker.restore(state.meta["watermarks"])
        input_frame = state.frames.get("input")
        self._set_input_schema(None if input_frame is None else input_frame.schema)
        self._seq = seq_from_meta(state.meta["seq"])
        self._pending, self._pending_rows, self._pending_end = [], 0, MAX_WATERMARK

    def _result(
        self, key: tuple[Any, ...], start: int, end: int, acc: list[Any], update: bool
    ) -> None:
        """Queue one result row; :meth:`_flush` emits the queue as one batch."""
        self._rows.append([*key, start, end, *self.acc.finalize(acc), update])

    def _queue(self, frame: pl.DataFrame) -> None:
        """Queue result rows already built as a frame (after any queued by :meth:`_result`)."""
        self._frame_rows()
        self._frames.append(frame)

    def _frame_rows(self) -> None:
        if self._rows:
            assert self._out_schema is not None
            rows, self._rows = self._rows, []
            self._frames.append(pl.DataFrame(rows, schema=self._out_schema, orient="row"))

    def _flush(self, partition: int) -> None:
        self._frame_rows()
        if not self._frames:
            return
        frames, self._frames = self._frames, []
        self.emit(partition, frames[0] if len(frames) == 1 else pl.concat(frames))

    def _late(self, partition: int, rows: pl.DataFrame) -> None:
        """Send rows (with ``window_start``/``window_end``) to the late output."""
        if rows.height == 0:
            return
        rows = rows.drop(TS, SEQ, PART, strict=False)
        self.counters.late_rows += rows.height
        for out in self.late_outputs:
            out.on_batch(partition, rows)


def _min_event_ms(ts: pl.Series) -> int:
    """The smallest event time of ``ts`` (no nulls) in epoch ms, as :func:`event_time_ms`
    computes event times."""
    if isinstance(ts.dtype, pl.Datetime):
        ts = ts.dt.epoch("ms")
    elif ts.dtype != pl.Int64:
        ts = ts.cast(pl.Int64)
    value = ts.min()
    assert isinstance(value, int)
    return value


def _plain(value: object) -> object:
    """A JSON-comparable form of an aggregation parameter (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value
