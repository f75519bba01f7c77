"""The interval join in the streaming runtime (the frame join itself is
:func:`strom.engine.joins.join_frames`, shared with the bounded runner).

With ``W`` the join's watermark (the minimum over every source partition upstream of either
input), ``lower``/``upper`` the bounds (a right row at ``r`` matches a left row at ``l`` iff
``l + lower <= r <= l + upper``):

- A left row can still meet future on-time right rows (``r >= W``) while ``l + upper >= W``;
  it is purged once ``l < W - upper`` (never when ``upper`` is ``None``). A right row likewise
  while ``r - lower >= W``; purged once ``r < W + lower`` (never when ``lower`` is ``None``).
- A left row arriving with ``l < W`` may have partners in ``[l + lower, W + lower)``, which
  may already be purged, whenever ``lower`` is bounded: it goes to the left late output, and is
  neither joined nor kept. A right row with ``r < W`` when ``upper`` is bounded, likewise.

So every in-bounds pair of rows that are not late meets: whichever arrives second finds the
first still held. The output is therefore the bounded runner's join over the rows that are not
late, and each pair is emitted once, with the batch that completes it. ``W`` is the watermark
from before the batch, as for windows. A joined row's ``join_time`` (the larger event time) is
``>= W`` unless one of its rows arrived behind ``W`` on a side that cannot be late (the other
side is never purged); a window after the join then counts it as late.

State is columnar: per side one frame of the rows that may still match, plus their event time
in ms; each batch is hash-joined against the other side's frame by Polars.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from strom.engine.constants import LEFT_TS, RIGHT_TS
from strom.engine.contracts import OperatorState
from strom.engine.joins import join_frames
from strom.pipeline.plan import IntervalJoinNode, JoinSide
from strom.pipeline.windows import event_time_ms
from strom.runtime.operators import Operator
from strom.runtime.snapshots import check_definition
from strom.runtime.watermarks import MAX_WATERMARK, MIN_WATERMARK, WatermarkTracker

KIND = "interval_join"
_TIME = {"left": LEFT_TS, "right": RIGHT_TS}
_OTHER: dict[JoinSide, JoinSide] = {"left": "right", "right": "left"}
_SIDES: tuple[JoinSide, JoinSide] = ("left", "right")
_MAX_CHUNKS = 32


class _Port(Operator):
    """One input of the join: tells it which side a message came in on."""

    def __init__(self, join: IntervalJoinOperator, side: JoinSide) -> None:
        super().__init__(f"{join.name}.{side}")
        self.join = join
        self.side: JoinSide = side

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.join.on_side_batch(self.side, partition, batch)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        self.join.on_progress(partition, max_event_time, now_ms, finished)


class IntervalJoinOperator(Operator):
    """Joined rows go to :attr:`outputs` with the batch that completes them; late rows go
    unchanged to ``late_outputs[side]``. Upstream operators feed :attr:`ports` (left, right)."""

    def __init__(
        self,
        name: str,
        node: IntervalJoinNode,
        ts_columns: tuple[str, str],
        tracker: WatermarkTracker,
    ) -> None:
        super().__init__(name)
        self.node = node
        self.ts_columns: dict[JoinSide, str] = {"left": ts_columns[0], "right": ts_columns[1]}
        self.tracker = tracker
        self.ports = (_Port(self, "left"), _Port(self, "right"))
        self.late_outputs: dict[JoinSide, list[Operator]] = {"left": [], "right": []}
        self._state: dict[JoinSide, pl.DataFrame | None] = {"left": None, "right": None}
        self._min_ts: dict[JoinSide, int | None] = {"left": None, "right": None}
        self._schemas: dict[JoinSide, pl.Schema | None] = {"left": None, "right": None}
        self._names: tuple[list[str], dict[str, str]] | None = None

    @property
    def watermark(self) -> int:
        return self.tracker.current

    def _cut(self, side: JoinSide, watermark: int) -> int | None:
        """Rows of ``side`` with event time below this can match no future on-time row."""
        if side == "left":
            return None if self.node.upper_ms is None else watermark - self.node.upper_ms
        return None if self.node.lower_ms is None else watermark + self.node.lower_ms

    def on_side_batch(self, side: JoinSide, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        if batch.height == 0:
            return
        column = self.ts_columns[side]
        ts = batch.get_column(column)
        if ts.null_count():
            raise ValueError(
                f"{self.name}: {ts.null_count()} {side} rows have a null event time in column "
                f"{column!r}; filter or fill them before the join"
            )
        if self._schemas[side] is None:
            self._schemas[side] = batch.schema
        time = _TIME[side]
        framed = batch.with_columns(event_time_ms(column, ts.dtype).alias(time))
        watermark = self.watermark
        # partners of a row behind W may be purged only if the other side is purgeable
        if self._cut(_OTHER[side], watermark) is not None and watermark > MIN_WATERMARK:
            behind = pl.col(time) < watermark
            self._late(side, partition, framed.filter(behind))
            framed = framed.filter(~behind)
            if framed.height == 0:
                return
        other = self._state[_OTHER[side]]
        if other is not None:
            left, right = (framed, other) if side == "left" else (other, framed)
            kept, renamed = self._output_names()
            out = join_frames(self.node, left.lazy(), right.lazy(), kept, renamed).collect()
            if out.height:
                self.emit(partition, out)
        self._store(side, framed, watermark)

    def _output_names(self) -> tuple[list[str], dict[str, str]]:
        if self._names is None:
            left, right = self._schemas["left"], self._schemas["right"]
            assert left is not None and right is not None
            self._names = self.node.output_columns(list(left), self.ts_columns["left"], list(right))
        return self._names

    def _store(self, side: JoinSide, rows: pl.DataFrame, watermark: int) -> None:
        cut = self._cut(side, watermark)
        time = _TIME[side]
        if cut is not None:
            rows = _at_or_after(rows, time, cut)
        if rows.height == 0:
            return
        low = rows.get_column(time).min()
        assert isinstance(low, int)
        state = self._state[side]
        if state is None:
            self._state[side] = rows
        else:
            state = pl.concat([state, rows], how="vertical", rechunk=False)
            self._state[side] = state.rechunk() if state.n_chunks() > _MAX_CHUNKS else state
        previous = self._min_ts[side]
        self._min_ts[side] = low if previous is None else min(previous, low)

    def _late(self, side: JoinSide, partition: int, rows: pl.DataFrame) -> None:
        if rows.height == 0:
            return
        rows = rows.drop(_TIME[side])
        self.counters.late_rows += rows.height
        for out in self.late_outputs[side]:
            out.on_batch(partition, rows)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        before, after = self.tracker.progress(partition, max_event_time, now_ms, finished)
        self.counters.watermark = after
        if after > before:
            self._purge(after)
        for out in (*self.outputs, *self.late_outputs["left"], *self.late_outputs["right"]):
            out.on_progress(partition, max_event_time, now_ms, finished)

    def _purge(self, watermark: int) -> None:
        for side in _SIDES:
            cut = self._cut(side, watermark)
            state, low = self._state[side], self._min_ts[side]
            if cut is None or state is None or low is None or low >= cut:
                continue
            kept = _at_or_after(state, _TIME[side], cut)
            if kept.height == 0:
                self._state[side], self._min_ts[side] = None, None
            else:
                self._state[side] = kept
                self._min_ts[side] = kept.get_column(_TIME[side]).min()  # type: ignore[assignment]

    def state_size(self) -> int:
        """Rows held, both sides together."""
        return sum(s.height for s in self._state.values() if s is not None)

    def definition(self) -> dict[str, Any]:
        """What a state of this operator depends on (a state of another definition is refused)."""
        node = self.node
        return {
            "left_on": list(node.left_on),
            "right_on": list(node.right_on),
            "lower_ms": node.lower_ms,
            "upper_ms": node.upper_ms,
            "timestamps": [self.ts_columns["left"], self.ts_columns["right"]],
        }

    def snapshot(self) -> OperatorState:
        """``interval_join`` state: frames ``left`` and ``right``, each side's held rows with their
        event time in ms (an empty frame of the side's columns when it holds none), for every
        side that has seen a batch; and the watermarks."""
        frames: dict[str, pl.DataFrame] = {}
        for side in _SIDES:
            schema = self._schemas[side]
            if schema is None:
                continue
            held = self._state[side]
            frames[side] = (
                held
                if held is not None
                else pl.DataFrame(schema={**schema, _TIME[side]: pl.Int64()})
            )  # frames are never changed in place, so sharing their buffers is safe
        meta = {"definition": self.definition(), "watermarks": self.tracker.snapshot()}
        return OperatorState(KIND, 1, frames, meta)

    def rebase_clock(self, shift_ms: float) -> None:
        self.tracker.rebase_clock(shift_ms)

    def restore(self, state: OperatorState) -> None:
        """Replace everything with a :meth:`snapshot` (:class:`StateError` if it is not one of
        an operator defined like this one)."""
        state.check(KIND, 1, self.name)
        check_definition(state, self.definition(), self.name)
        self.tracker.restore(state.meta["watermarks"])
        self._names = None
        for side in _SIDES:
            frame = state.frames.get(side)
            time = _TIME[side]
            held = frame if frame is not None and frame.height else None
            self._schemas[side] = (
                None
                if frame is None
                else pl.Schema({n: t for n, t in frame.schema.items() if n != time})
            )
            self._state[side] = held
            self._min_ts[side] = None if held is None else held.get_column(time).min()  # type: ignore[assignment]


def _at_or_after(frame: pl.DataFrame, column: str, cut: int) -> pl.DataFrame:
    """Rows with ``column >= cut``; ``cut`` may lie outside Int64."""
    if cut <= MIN_WATERMARK:
        return frame
    if cut > MAX_WATERMARK:
        return frame.clear()
    return frame.filter(pl.col(column) >= cut)
