"""The equi-join in the streaming runtime: each side's rows held for a processing-time TTL.

A row arriving at processing time ``a`` (the executor's clock when its batch reaches the join)
is held while ``now - a < ttl``. Each batch is joined against the other side's held rows
(:func:`strom.engine.relational.equi_join`, the bounded runner's join), then its rows are held
in turn, so two rows meet exactly when the second arrives while the first is held, and each
pair is emitted once, with the batch that completes it. Nothing is ever retracted:

- ``inner``: the pairs.
- ``left``: the pairs; a left row that met no right row is emitted with null right columns
  when it leaves the state (expired, or every input ended), or at once if a key is null.
- ``semi``: a left row once, when it first meets a right row (then it is no longer held).
- ``anti``: a left row that met no right row, when it leaves the state (at once if a key is
  null); a left row that meets one is dropped.

Right rows with a null key can meet nothing and are never held. When every source partition
upstream has ended, every held row leaves the state, so a run in which no row outlived its TTL
emits the bounded join's rows. Held rows are Polars frames, one per side; expiry is checked
before each batch and at every progress message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from strom.engine.contracts import OperatorState
from strom.engine.relational import equi_join
from strom.pipeline.plan import JoinNode, JoinSide
from strom.runtime.operators import Operator
from strom.runtime.snapshots import check_definition
from strom.runtime.watermarks import MAX_WATERMARK, WatermarkTracker

KIND = "ttl_join"
ARRIVAL = "__strom_arrival"
"""A held row's arrival, in the executor's processing-time clock (Float64 ms)."""
MATCHED = "__strom_matched"
"""Whether a held left row has met a right row (``left`` joins)."""
ROW = "__strom_row"
"""A held left row's number, to mark it matched."""
_SIDES: tuple[JoinSide, JoinSide] = ("left", "right")
_MAX_CHUNKS = 32


class _Port(Operator):
    """One input of the join: tells it which side a message came in on."""

    def __init__(self, join: TTLJoinOperator, side: JoinSide) -> None:
        super().__init__(f"{join.name}.{side}")
        self.join = join
        self.side: JoinSide = side

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.join.on_side_batch(self.side, partition, batch)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        self.join.on_progress(partition, max_event_time, now_ms, finished)


class TTLJoinOperator(Operator):
    """Joined rows go to :attr:`outputs`; upstream operators feed :attr:`ports` (left, right).

    ``schemas`` are the inputs' schemas from the plan where known (a left row padded with
    nulls before any right row arrived needs the right columns' types).
    """

    def __init__(
        self,
        name: str,
        node: JoinNode,
        clock: Callable[[], float],
        tracker: WatermarkTracker,
        schemas: tuple[pl.Schema | None, pl.Schema | None],
    ) -> None:
        super().__init__(name)
        assert node.ttl_ms is not None  # the executor refuses a join without one
        self.node = node
        self.ttl_ms = node.ttl_ms
        self.clock = clock
        self.tracker = tracker
        self.ports = (_Port(self, "left"), _Port(self, "right"))
        self._schemas: dict[JoinSide, pl.Schema | None] = dict(zip(_SIDES, schemas, strict=True))
        self._held: dict[JoinSide, pl.DataFrame | None] = {"left": None, "right": None}
        self._next_row = 0

    # -- batches -----------------------------------------------------------------------------

    def on_side_batch(self, side: JoinSide, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        if batch.height == 0:
            return
        if self._schemas[side] is None:
            self._schemas[side] = batch.schema
        now = float(self.clock())
        self._expire(partition, now)
        if side == "left":
            self._left_batch(partition, batch, now)
        else:
            self._right_batch(partition, batch, now)

    def _left_batch(self, partition: int, batch: pl.DataFrame, now: float) -> None:
        how, node = self.node.how, self.node
        no_key = pl.any_horizontal(pl.col(c).is_null() for c in node.left_on)
        if how in ("left", "anti"):  # a null key meets nothing: final at once
            lonely = batch.filter(no_key)
            self._emit_unmatched(partition, lonely)
        batch = batch.filter(~no_key)
        if batch.height == 0:
            return
        rows = pl.int_range(pl.len(), dtype=pl.Int64) + self._next_row
        self._next_row += batch.height
        framed = batch.with_columns(
            pl.lit(now, dtype=pl.Float64).alias(ARRIVAL),
            pl.lit(False).alias(MATCHED),
            rows.alias(ROW),
        )
        right = self._held["right"]
        if right is not None:
            if how in ("inner", "left"):
                pairs = self._pairs(framed, right)
                self._emit(partition, pairs.drop(ROW, ARRIVAL, MATCHED))
                if how == "left" and pairs.height:
                    hit = pl.col(ROW).is_in(pairs.get_column(ROW).implode())
                    framed = framed.with_columns(hit.alias(MATCHED))
            else:
                met = equi_join(node, framed, right, framed.columns, {}, "semi")
                if how == "semi":
                    self._emit(partition, met.drop(ROW, ARRIVAL, MATCHED))
                framed = framed.filter(~pl.col(ROW).is_in(met.get_column(ROW).implode()))
        self._hold("left", framed)

    def _right_batch(self, partition: int, batch: pl.DataFrame, now: float) -> None:
        how, node = self.node.how, self.node
        batch = batch.filter(pl.all_horizontal(pl.col(c).is_not_null() for c in node.right_on))
        if batch.height == 0:
            return
        framed = batch.with_columns(pl.lit(now, dtype=pl.Float64).alias(ARRIVAL))
        left = self._held["left"]
        if left is not None:
            if how in ("inner", "left"):
                pairs = self._pairs(left, framed)
                self._emit(partition, pairs.drop(ROW, ARRIVAL, MATCHED))
                if how == "left" and pairs.height:
                    hit = pl.col(ROW).is_in(pairs.get_column(ROW).implode())
                    self._held["left"] = left.with_columns((hit | pl.col(MATCHED)).alias(MATCHED))
            else:
                met = equi_join(node, left, framed, left.columns, {}, "semi")
                if how == "semi":
                    self._emit(partition, met.drop(ROW, ARRIVAL, MATCHED))
                kept = left.filter(~pl.col(ROW).is_in(met.get_column(ROW).implode()))
                self._held["left"] = kept if kept.height else None
        self._hold("right", framed)

    def _pairs(self, left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
        """Every pair of held/arriving rows with equal keys, the left internals kept."""
        user_right = [c for c in right.columns if c != ARRIVAL]
        renamed = self.node.output_columns(self._user_left(), user_right)
        return equi_join(self.node, left, right.drop(ARRIVAL), left.columns, renamed, "inner")

    def _user_left(self) -> list[str]:
        schema = self._schemas["left"]
        assert schema is not None
        return list(schema)

    def _hold(self, side: JoinSide, rows: pl.DataFrame) -> None:
        """Append ``rows`` (which arrived last) to ``side``'s held rows."""
        if rows.height == 0:
            return
        held = self._held[side]
        if held is None:
            self._held[side] = rows
            return
        held = pl.concat([held, rows], how="vertical", rechunk=False)
        self._held[side] = held.rechunk() if held.n_chunks() > _MAX_CHUNKS else held

    # -- leaving the state ---------------------------------------------------------------------

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        _, after = self.tracker.progress(partition, max_event_time, now_ms, finished)
        self.counters.watermark = after
        if after >= MAX_WATERMARK:  # every input has ended: every held row leaves
            self._leave(partition, {side: self._held[side] for side in _SIDES})
            self._held = {"left": None, "right": None}
        else:
            self._expire(partition, now_ms)
        for out in self.outputs:
            out.on_progress(partition, max_event_time, now_ms, finished)

    def _expire(self, partition: int, now: float) -> None:
        """Rows held for ``ttl_ms`` or longer (``arrival <= now - ttl``) leave the state.

        Held rows are in arrival order (appended as they arrive, by a clock that never goes
        back; joins and filters keep the order), so the leaving rows are a prefix, found by
        binary search: checking costs nothing while nothing expires."""
        limit = now - self.ttl_ms
        gone: dict[JoinSide, pl.DataFrame | None] = {}
        for side in _SIDES:
            held = self._held[side]
            if held is None:
                continue
            arrival = held.get_column(ARRIVAL)
            if arrival[0] > limit:
                continue
            cut = int(arrival.search_sorted(limit, side="right"))
            gone[side] = held.slice(0, cut)
            self._held[side] = held.slice(cut) if cut < held.height else None
        self._leave(partition, gone)

    def _leave(self, partition: int, gone: dict[JoinSide, pl.DataFrame | None]) -> None:
        left = gone.get("left")
        if left is None or self.node.how not in ("left", "anti"):
            return
        unmatched = left.filter(~pl.col(MATCHED)) if self.node.how == "left" else left
        self._emit_unmatched(partition, unmatched.drop(ROW, ARRIVAL, MATCHED))

    def _emit_unmatched(self, partition: int, rows: pl.DataFrame) -> None:
        """Left rows that met nothing: as they are (anti), or padded with null right columns."""
        if rows.height == 0:
            return
        if self.node.how == "left":
            right = self._schemas["right"] or pl.Schema()
            renamed = self.node.output_columns(self._user_left(), list(right))
            rows = rows.with_columns(
                pl.lit(None, dtype=right[c]).alias(name) for c, name in renamed.items()
            )
        self._emit(partition, rows)

    def _emit(self, partition: int, rows: pl.DataFrame) -> None:
        if rows.height:
            self.emit(partition, rows)

    # -- state ---------------------------------------------------------------------------------

    def state_size(self) -> int:
        """Rows held, both sides together."""
        return sum(h.height for h in self._held.values() if h is not None)

    def definition(self) -> dict[str, Any]:
        """What a state of this operator depends on (a state of another definition is refused)."""
        node = self.node
        return {
            "left_on": list(node.left_on),
            "right_on": list(node.right_on),
            "how": node.how,
            "suffix": node.suffix,
            "ttl_ms": node.ttl_ms,
        }

    def snapshot(self) -> OperatorState:
        """``ttl_join`` state: frames ``left`` and ``right``, each side's held rows with their
        arrival time (left rows also their number and whether they met a right row), for each
        side that holds rows; the watermarks and the next left row number."""
        frames: dict[str, pl.DataFrame] = {
            side: held for side, held in self._held.items() if held is not None
        }
        meta = {
            "definition": self.definition(),
            "watermarks": self.tracker.snapshot(),
            "next_row": self._next_row,
        }
        return OperatorState(KIND, 1, frames, meta)

    def rebase_clock(self, shift_ms: float) -> None:
        self.tracker.rebase_clock(shift_ms)
        for side in _SIDES:
            held = self._held[side]
            if held is not None:
                self._held[side] = held.with_columns(pl.col(ARRIVAL) + shift_ms)

    def restore(self, state: OperatorState) -> None:
        """Replace everything with a :meth:`snapshot` (:class:`StateError` if it is not one of
        an operator defined like this one)."""
        state.check(KIND, 1, self.name)
        check_definition(state, self.definition(), self.name)
        self.tracker.restore(state.meta["watermarks"])
        self._next_row = int(state.meta["next_row"])
        for side in _SIDES:
            held = state.frames.get(side)
            self._held[side] = held
            if held is not None and self._schemas[side] is None:
                internal = (ROW, ARRIVAL, MATCHED)
                self._schemas[side] = pl.Schema(
                    {c: t for c, t in held.schema.items() if c not in internal}
                )
