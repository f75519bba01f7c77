"""The streaming operator running a keyed :class:`~strom.pipeline.ProcessFunction`.

Each batch's rows are buffered in the :class:`~strom.engine.keyed_process.KeyedProcessCore`;
with ``ordering="arrival"`` they are processed at once, otherwise when the watermark passes them.
After every progress message the operator releases what the new watermark makes due, fires
processing-time timers due at the executor's clock and, once every input has ended, finishes the
core (all remaining timers). Output rows go downstream as one batch per message, after which the
progress message is forwarded.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from strom.engine.constants import TS
from strom.engine.contracts import OperatorState
from strom.engine.keyed_process import KeyedProcessCore
from strom.engine.transforms import rows_to_frame
from strom.pipeline.plan import ProcessNode
from strom.pipeline.windows import event_time_ms
from strom.runtime.operators import Operator
from strom.runtime.process_state import core_frames, core_meta, restore_core
from strom.runtime.snapshots import check_definition, seq_from_meta, seq_to_meta
from strom.runtime.watermarks import MAX_WATERMARK, WatermarkTracker

KIND = "keyed_process"


class ProcessOperator(Operator):
    def __init__(
        self, name: str, node: ProcessNode, ts_column: str | None, tracker: WatermarkTracker
    ) -> None:
        super().__init__(name)
        self.node = node
        self.ts_column = ts_column
        self.tracker = tracker
        self.core = KeyedProcessCore(node.fn, node.keys, node.ordering, ts_column is not None)
        self._seq: dict[int, int] = {}
        self._input_schema: pl.Schema | None = None

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        if batch.height == 0:
            return
        if self._input_schema is None:
            self._input_schema = batch.schema
        start = self._seq.get(partition, 0)
        self._seq[partition] = start + batch.height
        if self.ts_column is None:
            for i, row in enumerate(batch.iter_rows(named=True)):
                self.core.add(None, partition, start + i, row)
        else:
            ts = batch.get_column(self.ts_column)
            if ts.null_count():
                raise ValueError(
                    f"{self.name}: {ts.null_count()} rows have a null event time in column "
                    f"{self.ts_column!r}; filter or fill them before process()"
                )
            times = batch.select(event_time_ms(self.ts_column, ts.dtype).alias(TS))[TS]
            watermark = self.tracker.current
            for i, (t, row) in enumerate(zip(times, batch.iter_rows(named=True), strict=True)):
                if t < watermark:
                    self.counters.late_rows += 1
                self.core.add(t, partition, start + i, row)
        if self.node.ordering == "arrival":
            self.core.release(self.tracker.current)
            self._flush(partition)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        _, watermark = self.tracker.progress(partition, max_event_time, now_ms, finished)
        self.counters.watermark = watermark
        self.core.fire_processing_timers(now_ms)
        self.core.release(watermark)
        if watermark == MAX_WATERMARK:
            self.core.finish()
        self._flush(partition)
        super().on_progress(partition, max_event_time, now_ms, finished)

    def _flush(self, partition: int) -> None:
        rows = self.core.take_output()
        if rows:
            self.emit(partition, rows_to_frame(rows, self.node.schema, self.name))

    def state_size(self) -> int:
        """Keys holding state or timers, plus elements awaiting the watermark."""
        return self.core.state_size()

    def definition(self) -> dict[str, Any]:
        """What a state of this operator depends on (a state of another definition is refused)."""
        return {
            "keys": list(self.node.keys),
            "function": type(self.node.fn).__qualname__,
            "ordering": self.node.ordering,
            "output": list(self.node.schema),
        }

    def snapshot(self) -> OperatorState:
        """``keyed_process`` state: per-key state, timers and buffered elements (frames, see
        :mod:`strom.runtime.process_state`), the core's clocks, sequence counters, watermarks."""
        meta = {
            "definition": self.definition(),
            "core": core_meta(self.core),
            "seq": seq_to_meta(self._seq),
            "watermarks": self.tracker.snapshot(),
        }
        return OperatorState(KIND, 1, core_frames(self.core, self._input_schema), meta)

    def rebase_clock(self, shift_ms: float) -> None:
        """The watermark tracker's idle clocks, the core's processing time and its pending
        processing-time timers (each keeps its distance from now)."""
        self.tracker.rebase_clock(shift_ms)
        self.core.rebase_clock(shift_ms)

    def restore(self, state: OperatorState) -> None:
        """Replace everything with a :meth:`snapshot` (:class:`StateError` if it is not one of
        an operator defined like this one)."""
        state.check(KIND, 1, self.name)
        check_definition(state, self.definition(), self.name)
        self.tracker.restore(state.meta["watermarks"])
        frames = dict(state.frames)
        restore_core(self.core, frames, state.meta["core"])
        self._input_schema = frames["input"].schema if "input" in frames else None
        self._seq = seq_from_meta(state.meta["seq"])
