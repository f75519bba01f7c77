"""The event-time as-of join in the streaming runtime (the frame join itself is
:func:`strom.engine.asof.asof_frames`, shared with the bounded runner).

The join's watermark ``W`` is the minimum of two: the left input's (over the source partitions
upstream of the events, advanced by progress arriving through the left port) and the right
input's (likewise). Keeping one per port, rather than one over all partitions, matters when
both sides come from one source (events, and window features of those events): a partition's
progress reaches the left port before the window it also feeds has emitted the windows that
progress completes; the right input's watermark moves only once they have arrived.

- A feature row arriving with its time ``a >= W`` is held; one with ``a < W`` is late (an event
  at ``t >= a`` may already have been joined without it): it goes to the right late output,
  unchanged, and is not held. A window's results are never late here (they are emitted as the
  window's watermark reaches their ``window_end``, before that progress reaches this join); its
  ``is_update`` re-emissions after allowed lateness are.
- An event arriving with ``t >= W`` is held until ``W > t``: then every feature row with
  ``a <= t`` that is not late has arrived, so it is joined to exactly the row the bounded
  runner joins it to. An event arriving with ``t < W`` is late (the rows it needs may be
  purged): it goes to the left late output, unchanged.
- Purging at ``W``: events ``t < W`` leave with their join; of the feature rows with
  ``a < W`` only the latest per key can still be an answer (every later event has ``t >= W``),
  and not even that once ``a < W - ttl``.

So the output is the bounded runner's join of the rows that are not late, and each event is
emitted once, when the watermark passes it, with its event time ``>= W``. Progress is passed on
clipped to ``W`` (a partition's largest event time to ``W`` plus its bound, its end only once it
has ended on both inputs), so an event-time step after the join (a window) never counts the
join's rows as late. State: two frames, the events held and the feature rows held, each with
its event time in ms, and both inputs' watermarks (what was passed on follows from them).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from strom.engine.asof import AT, asof_frames, usable_features
from strom.engine.contracts import OperatorState
from strom.pipeline.plan import AsofJoinNode, JoinSide
from strom.pipeline.windows import event_time_ms
from strom.runtime.operators import Operator
from strom.runtime.snapshots import check_definition
from strom.runtime.watermarks import MAX_WATERMARK, MIN_WATERMARK, WatermarkTracker

KIND = "asof_join"
_SIDES: tuple[JoinSide, JoinSide] = ("left", "right")
_MAX_CHUNKS = 32


class _Port(Operator):
    """One input of the join: tells it which side a message came in on."""

    def __init__(self, join: AsofJoinOperator, side: JoinSide) -> None:
        super().__init__(f"{join.name}.{side}")
        self.join = join
        self.side: JoinSide = side

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.join.on_side_batch(self.side, partition, batch)

    def on_progress(
        self, partition: int, max_event_time: int | None, now_ms: float, finished: bool
    ) -> None:
        self.join.on_side_progress(self.side, partition, max_event_time, now_ms, finished)


class AsofJoinOperator(Operator):
    """Joined events go to :attr:`outputs` once the watermark passes them; late rows go
    unchanged to ``late_outputs[side]``. Upstream operators feed :attr:`ports` (left, right)."""

    def __init__(
        self,
        name: str,
        node: AsofJoinNode,
        ts_columns: tuple[str, str],
        trackers: tuple[WatermarkTracker, WatermarkTracker],
        right_schema: pl.Schema | None,
    ) -> None:
        """``trackers``: over the source partitions upstream of each input; ``right_schema``:
        the right stream's (if known before running), for output before any feature row."""
        super().__init__(name)
        self.node = node
        self.right_schema = right_schema
        self.ts_columns: dict[JoinSide, str] = {"left": ts_columns[0], "right": ts_columns[1]}
        self.trackers: dict[JoinSide, WatermarkTracker] = {
            "left": trackers[0],
            "right": trackers[1],
        }
        self.ports = (_Port(self, "left"), _Port(self, "right"))
        self.late_outputs: dict[JoinSide, list[Operator]] = {"left": [], "right": []}
        self._state: dict[JoinSide, pl.DataFrame | None] = {"left": None, "right": None}
        self._schemas: dict[JoinSide, pl.Schema | None] = {"left": None, "right": None}
        # what downstream has been told (see _forward): not state, a function of the trackers'
        self._covers = {side: set(t.bounds()) for side, t in self.trackers.items()}
        self._bounds = {**trackers[0].bounds(), **trackers[1].bounds()}
        self._seen: dict[int, int] = {}
        self._finished: dict[JoinSide, set[int]] = {"left": set(), "right": set()}
        self._forwarded: dict[int, tuple[int | None, bool]] = {}

    @property
    def watermark(self) -> int:
        return min(self.trackers["left"].current, self.trackers["right"].current)

    def on_side_batch(self, side: JoinSide, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        if batch.height == 0:
            return
        column = self.ts_columns[side]
        ts = batch.get_column(column)
        if ts.null_count():
            what = "events" if side == "left" else "feature rows"
            raise ValueError(
                f"{self.name}: {ts.null_count()} {what} have a null event time in column "
                f"{column!r}; filter or fill them before the as-of join"
            )
        if self._schemas[side] is None:
            self._schemas[side] = batch.schema
        framed = batch.with_columns(event_time_ms(column, ts.dtype).cast(pl.Int64).alias(AT))
        watermark = self.watermark
        if watermark > MIN_WATERMARK:
            behind = pl.col(AT) < watermark
            self._late(side, partition, framed.filter(behind))
            framed = framed.filter(~behind)
        if side == "right":
            framed = framed.drop_nulls(list(self.node.right_on))  # can never match
        if framed.height:
            self._append(side, framed)

    def _append(self, side: JoinSide, rows: pl.DataFrame) -> None:
        state = self._state[side]
        if state is None:
            self._state[side] = rows
            return
        state = pl.concat([state, rows], how="vertical", rechunk=False)
        self._state[side] = state.rechunk() if state.n_chunks() > _MAX_CHUNKS else state

    def _late(self, side: JoinSide, partition: int, rows: pl.DataFrame) -> None:
        if rows.height == 0:
            return
        rows = rows.drop(AT)
        self.counters.late_rows += rows.height
        for out in self.late_outputs[side]:
            out.on_batch(partition, rows)

    def on_side_progress(
        self,
        side: JoinSide,
        partition: int,
        max_event_time: int | None,
        now_ms: float,
        finished: bool,
    ) -> None:
        before = self.watermark
        self.trackers[side].progress(partition, max_event_time, now_ms, finished)
        after = self.watermark
        self.counters.watermark = after
        if after > before:
            self._release(partition, after)
            self._purge(after)
        seen = self._seen.get(partition)
        if max_event_time is not None and (seen is None or max_event_time > seen):
            self._seen[partition] = max_event_time
        if finished:
            self._finished[side].add(partition)
        self._forward(partition, now_ms, always=True, active=max_event_time is not None)
        if after > before:  # partitions held back before may go further now
            for other in self._bounds:
                if other != partition:
                    self._forward(other, now_ms, always=False)

    def _forward(self, partition: int, now_ms: float, *, always: bool, active: bool = True) -> None:
        """Pass ``partition``'s progress on, no further than this join's watermark: its
        largest event time clipped to ``watermark + bound``, and ended only once it has ended
        on every input it feeds. Without the clip a partition's progress would reach the
        steps after the join through one input before the join could release the events it
        lets through (its other input lagging), and they would count them as late."""
        watermark, seen = self.watermark, self._seen.get(partition)
        clipped = seen
        if seen is not None and watermark < MAX_WATERMARK:
            clipped = min(seen, watermark + self._bounds[partition])
        ended = all(
            partition in self._finished[side] for side in _SIDES if partition in self._covers[side]
        )
        state = (clipped, ended)
        previous = self._forwarded.get(partition)
        if not always and previous == state:
            return
        self._forwarded[partition] = state
        if not active and previous is not None and previous[0] == clipped:
            clipped = None  # no data: not activity downstream either (idle timeouts)
        for out in (*self.outputs, *self.late_outputs["left"], *self.late_outputs["right"]):
            out.on_progress(partition, clipped, now_ms, ended)

    def _release(self, partition: int, watermark: int) -> None:
        """Join and emit the events the watermark has passed (``t < watermark``)."""
        held = self._state["left"]
        if held is None:
            return
        ready = held if watermark == MAX_WATERMARK else held.filter(pl.col(AT) < watermark)
        if ready.height == 0:
            return
        rest = held.filter(pl.col(AT) >= watermark) if ready.height < held.height else None
        self._state["left"] = rest if rest is not None and rest.height else None
        left_schema = self._schemas["left"]
        assert left_schema is not None
        features = self._state["right"]
        if features is None:
            right_schema = self._schemas["right"] or self.right_schema
            if right_schema is None:
                raise ValueError(
                    f"{self.name}: no feature row has arrived and the right stream's schema is "
                    "unknown, so the output's columns are not; declare the right source's schema"
                )
            features = pl.DataFrame(schema={**right_schema, AT: pl.Int64()})
        right_columns = [c for c in features.columns if c != AT]
        names = self.node.output_columns(list(left_schema), right_columns)
        self.emit(partition, asof_frames(self.node, ready, features, list(left_schema), names))

    def _purge(self, watermark: int) -> None:
        """Of the feature rows before ``watermark``, keep the latest per key (within ttl)."""
        features = self._state["right"]
        if features is None:
            return
        before = features.filter(pl.col(AT) < watermark)
        if before.height == 0:
            return
        keep = usable_features(self.node, before).unique(
            list(self.node.right_on), keep="last", maintain_order=True
        )
        ttl = self.node.ttl_ms
        if ttl is not None and watermark - ttl > MIN_WATERMARK:
            keep = keep.filter(pl.col(AT) >= watermark - ttl)
        after = features.filter(pl.col(AT) >= watermark)
        kept = pl.concat([keep, after], how="vertical")
        self._state["right"] = kept if kept.height else None

    def state_size(self) -> int:
        """Rows held: events waiting for the watermark and feature rows."""
        return sum(s.height for s in self._state.values() if s is not None)

    def definition(self) -> dict[str, Any]:
        """What a state of this operator depends on (a state of another definition is refused)."""
        node = self.node
        return {
            "left_on": list(node.left_on),
            "right_on": list(node.right_on),
            "ttl_ms": node.ttl_ms,
            "timestamps": [self.ts_columns["left"], self.ts_columns["right"]],
        }

    def snapshot(self) -> OperatorState:
        """``asof_join`` state: frames ``left`` (the events held) and ``right`` (the feature
        rows held), each with its event time in ms (an empty frame of the side's columns when
        it holds none), for every side that has seen a batch; and both watermarks."""
        frames: dict[str, pl.DataFrame] = {}
        for side in _SIDES:
            schema = self._schemas[side]
            if schema is None:
                continue
            held = self._state[side]
            # frames are never changed in place, so sharing their buffers is safe
            frames[side] = (
                held if held is not None else pl.DataFrame(schema={**schema, AT: pl.Int64()})
            )
        meta = {
            "definition": self.definition(),
            "watermarks": {side: self.trackers[side].snapshot() for side in _SIDES},
        }
        return OperatorState(KIND, 1, frames, meta)

    def rebase_clock(self, shift_ms: float) -> None:
        for tracker in self.trackers.values():
            tracker.rebase_clock(shift_ms)

    def restore(self, state: OperatorState) -> None:
        """Replace everything with a :meth:`snapshot` (:class:`StateError` if it is not one of
        an operator defined like this one)."""
        state.check(KIND, 1, self.name)
        check_definition(state, self.definition(), self.name)
        self._seen, self._forwarded = {}, {}
        for side in _SIDES:
            watermarks = state.meta["watermarks"][side]
            self.trackers[side].restore(watermarks)
            self._finished[side] = {int(p) for p, _, _, ended in watermarks["partitions"] if ended}
            for p, seen, _, _ in watermarks["partitions"]:
                if seen is not None and int(seen) > self._seen.get(int(p), MIN_WATERMARK):
                    self._seen[int(p)] = int(seen)
            frame = state.frames.get(side)
            self._schemas[side] = (
                None
                if frame is None
                else pl.Schema({n: t for n, t in frame.schema.items() if n != AT})
            )
            self._state[side] = frame if frame is not None and frame.height else None
