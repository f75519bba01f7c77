"""What every window operator shares: event time, watermarks, late output, result batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import polars as pl

from strom.engine.constants import PART, SEQ, TS
from strom.engine.contracts import OperatorState
from strom.engine.schemas import window_schema
from strom.pipeline.plan import WindowAggNode
from strom.pipeline.windows import event_time_ms
from strom.runtime.operators import Operator
from strom.runtime.snapshots import check_definition, seq_from_meta, seq_to_meta
from strom.runtime.watermarks import WatermarkTracker
from strom.runtime.windows.accumulators import Accumulators


class WindowOperatorBase(Operator):
    """A keyed window aggregation: results go to :attr:`outputs`, late rows to :attr:`late_outputs`.

    Subclasses implement :meth:`_process` (merge one batch, which already carries ``TS`` and
    ``SEQ`` columns) and :meth:`_fire` (emit windows the watermark has completed, purge expired
    state). Results are emitted after each batch and after each watermark advance; progress is
    then forwarded to both outputs, so operators downstream of a window keep their watermarks.
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

    @property
    def watermark(self) -> int:
        return self.tracker.current

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
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
        framed = batch.with_columns(
            event_time_ms(self.ts_column, ts.dtype).alias(TS),
            (pl.int_range(pl.len(), dtype=pl.Int64) + start).alias(SEQ),
            pl.lit(partition, dtype=pl.Int64).alias(PART),
        )
        self._process(partition, framed)
        self._flush(partition)

    def _set_input_schema(self, schema: pl.Schema | None) -> None:
        self._input_schema = schema
        if schema is not None:
            self._out_schema = window_schema(self.keys, self.node.aggs, schema)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        before, after = self.tracker.progress(partition, max_event_time, now_ms, finished)
        self.counters.watermark = after
        if after > before:
            self._fire(after)
            self._flush(partition)
        # results and late rows of this message are out before downstream sees the progress
        for out in (*self.outputs, *self.late_outputs):
            out.on_progress(partition, max_event_time, now_ms, finished)

    def _process(self, partition: int, batch: pl.DataFrame) -> None:
        raise NotImplementedError

    def _fire(self, watermark: int) -> None:
        raise NotImplementedError

    def state_size(self) -> int:
        """Windows (or sessions) currently held."""
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


def _plain(value: object) -> object:
    """A JSON-comparable form of an aggregation parameter (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value
