"""Session windows in the streaming runtime, on columnar state.

Each live session is one row of a :class:`~strom.runtime.windows.state.WindowState` (start, end,
``emitted``, ``dirty``, key columns, aggregation slots); :attr:`SessionOperator.index` is a frame
of the live sessions' keys, start, end and row id.

Per batch, everything is vectorized: Polars cuts each key's events into mini-sessions (in event
time order; one ends where the next event is at least ``gap`` later) and pre-aggregates them.
The live sessions of the batch's keys are joined in, and each key's intervals, sorted by start,
fall into groups wherever an interval starts at or after the largest end before it: a group is
one session after the batch (a late event can bridge two sessions: both fall in its group). A
group holding no live session that already ends ``allowed_lateness`` before the watermark is
late: its rows go to the late output, with the mini-session's interval as ``window_start`` and
``window_end``. Any other group keeps its first live session's row (the others are absorbed into
it and freed) or takes a new row, and its mini-sessions' partials merge in, one round per
position in the group so that no row repeats within a NumPy merge. A session that absorbed an
emitted one counts as emitted, so its next result is ``is_update=True`` and supersedes theirs
(its interval contains theirs).

A session emits when the watermark reaches its end (or at once if it already has: a late event
within lateness; or after every change in ``update`` mode), ordered by end, then as the key
tuples' ``repr`` sort; it is dropped at ``end + allowed_lateness``. Caveat: a later event that
would have bridged into a dropped session opens a new session instead (as in Flink).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from strom.engine.constants import SEQ, SESSION, TS
from strom.engine.contracts import OperatorState
from strom.engine.sessions import cut_sessions
from strom.pipeline.plan import WindowAggNode
from strom.pipeline.windows import Session
from strom.runtime.watermarks import WatermarkTracker
from strom.runtime.windows.base import WindowOperatorBase
from strom.runtime.windows.slots import IdArray
from strom.runtime.windows.state import WindowState

KIND = "session_window"
_START = "__strom_start"
_END = "__strom_end"
_ID = "__strom_id"
_ROW = "__strom_row"
_GROUP = "__strom_group"


def session_groups(starts: IdArray, ends: IdArray, new_key: npt.NDArray[np.bool_]) -> IdArray:
    """Group numbers of intervals sorted by key, then start (``new_key`` marks each key's
    first): a group opens at a key's first interval and wherever an interval starts at or after
    the largest end before it within its key.

    Vectorized: start and end values are replaced by their ranks among all of them (order and
    ties kept), and each key's ranks lifted above the previous key's, so one running maximum
    over all rows is a running maximum within each key."""
    n = starts.size
    if n == 0:
        return np.zeros(0, np.int64)
    values, rank = np.unique(np.concatenate([starts, ends]), return_inverse=True)
    lift = (np.cumsum(new_key) - 1) * values.size
    running = np.maximum.accumulate(lift + rank[n:])
    before = np.empty(n, np.int64)
    before[0] = -1
    before[1:] = running[:-1]
    opens = lift + rank[:n] >= before
    return np.cumsum(opens).astype(np.int64)


class SessionOperator(WindowOperatorBase):
    def __init__(
        self, name: str, node: WindowAggNode, ts_column: str, tracker: WatermarkTracker
    ) -> None:
        super().__init__(name, node, ts_column, tracker)
        assert isinstance(node.window, Session)
        self.gap = node.window.gap_ms
        self.state: WindowState | None = None
        self.index: pl.DataFrame = pl.DataFrame()
        self._partial_exprs = self.acc.partial_exprs()

    def _set_input_schema(self, schema: pl.Schema | None) -> None:
        super()._set_input_schema(schema)
        self.state = None
        self.index = pl.DataFrame()
        if schema is not None:
            assert self._out_schema is not None
            self.state = WindowState.for_batches(
                self.keys, self.node.aggs, schema, self._partial_exprs, self._out_schema
            )
            index_schema = {k: schema[k] for k in self.keys}
            index_schema |= {_START: pl.Int64(), _END: pl.Int64(), _ID: pl.Int64()}
            self.index = pl.DataFrame(schema=index_schema)

    def _process(self, partition: int, batch: pl.DataFrame, watermark: int) -> None:
        state = self.state
        assert state is not None
        keys = list(self.keys)
        cut = cut_sessions(batch, self.keys, self.gap, [TS, SEQ])
        group = [*keys, SESSION]
        partials = cut.group_by(group, maintain_order=True).agg(
            pl.col(TS).min().alias(_START),
            (pl.col(TS).max() + self.gap).alias(_END),
            *self.acc.batch_exprs(cut),
        )
        groups = self._groups(partials)
        late = (pl.col("ids").list.len() == 0) & (pl.col(_END) + self.lateness <= watermark)
        self._late_rows(partition, cut, partials, groups.filter(late))
        live = groups.filter(~late)
        if live.height:
            targets = self._merge(partition, partials, live)
            ready = targets if self.update_mode else targets[state.end[targets] <= watermark]
            if ready.size:
                self._queue(state.results(ready, None))

    def _groups(self, partials: pl.DataFrame) -> pl.DataFrame:
        """One row per session the batch's mini-sessions make or change: its keys, start, end,
        the live sessions it takes in (``ids``) and its partial rows (``rows``)."""
        keys = list(self.keys)
        index = self.index
        if keys and index.height:
            index = index.join(
                partials.select(keys).unique(), on=keys, how="semi", nulls_equal=True
            )
        intervals = pl.concat(
            [
                index.with_columns(pl.lit(-1, pl.Int64).alias(_ROW)),
                partials.select(
                    *keys,
                    _START,
                    _END,
                    pl.lit(-1, pl.Int64).alias(_ID),
                    pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW),
                ),
            ]
        ).sort([*keys, _START, _ROW])
        if keys:
            same = pl.all_horizontal(pl.col(k).eq_missing(pl.col(k).shift(1)) for k in keys)
            new_key = ~intervals.select(same).to_series().to_numpy()
        else:
            new_key = np.zeros(intervals.height, bool)
        new_key[0] = True
        starts = intervals.get_column(_START).to_numpy()
        ends = intervals.get_column(_END).to_numpy()
        return (
            intervals.with_columns(pl.Series(_GROUP, session_groups(starts, ends, new_key)))
            .group_by(_GROUP, maintain_order=True)
            .agg(
                *(pl.col(k).first() for k in keys),
                pl.col(_START).min(),
                pl.col(_END).max(),
                pl.col(_ID).filter(pl.col(_ID) >= 0).alias("ids"),
                pl.col(_ROW).filter(pl.col(_ROW) >= 0).alias("rows"),
            )
            .filter(pl.col("rows").list.len() > 0)
        )

    def _late_rows(
        self, partition: int, cut: pl.DataFrame, partials: pl.DataFrame, groups: pl.DataFrame
    ) -> None:
        """The rows of late groups (one mini-session each) to the late output."""
        if groups.height == 0:
            return
        rows = groups.get_column("rows").explode()
        marks = partials[rows.to_numpy()].select(
            *self.keys,
            SESSION,
            pl.col(_START).alias("window_start"),
            pl.col(_END).alias("window_end"),
        )
        group = [*self.keys, SESSION]
        self._late(partition, cut.join(marks, on=group, nulls_equal=True).drop(SESSION))

    def _merge(self, partition: int, partials: pl.DataFrame, groups: pl.DataFrame) -> IdArray:
        """Make each group one state row; returns the rows, in group order."""
        state = self.state
        assert state is not None
        ids = groups.get_column("ids")
        rows = groups.get_column("rows")
        id_count = ids.list.len().to_numpy()
        row_count = rows.list.len().to_numpy()
        held = id_count > 0
        targets = np.empty(groups.height, np.int64)
        targets[held] = ids.list.first().fill_null(-1).to_numpy()[held]
        fresh = int((~held).sum())
        if fresh:
            targets[~held] = state.allocate(fresh)
        for r in range(1, int(id_count.max(initial=0))):  # sessions a late event bridged
            chosen = id_count > r
            sources = ids.list.get(r, null_on_oob=True).fill_null(-1).to_numpy()
            state.absorb(targets[chosen], sources[chosen])
        absorbed = ids.list.slice(1).explode().drop_nulls().to_numpy()
        if absorbed.size:
            state.release(absorbed)
        starts = groups.get_column(_START).to_numpy()
        ends = groups.get_column(_END).to_numpy()
        parts = state.read(partials)
        for r in range(int(row_count.max())):
            chosen = row_count > r
            pos = rows.list.get(r, null_on_oob=True).fill_null(-1).to_numpy()[chosen]
            new = ~held[chosen] if r == 0 else np.zeros(pos.size, bool)
            if new.any():
                state.put(
                    targets[chosen][new], ends[chosen][new], partials, parts, pos[new], partition
                )
            if not new.all():
                state.merge(targets[chosen][~new], parts, pos[~new], partition)
        state.start[targets] = starts
        state.end[targets] = ends
        replaced = ids.explode().drop_nulls()
        index = self.index
        if replaced.len():
            index = index.filter(~pl.col(_ID).is_in(replaced.implode()))
        added = groups.select(*self.keys, _START, _END, pl.Series(_ID, targets))
        index = pl.concat([index, added])
        self.index = index.rechunk() if index.n_chunks() > 16 else index  # appends add chunks
        return targets

    def _fire(self, watermark: int) -> None:
        state = self.state
        if state is None or self.index.height == 0:
            return
        ids = self.index.get_column(_ID).to_numpy()
        ends = state.end[ids]
        due = ids[state.dirty[ids] & (ends <= watermark)]
        if due.size:
            due = state.emit_order(due)
            due = due[np.argsort(state.end[due], kind="stable")]
            self._queue(state.results(due, None))
        expired = ends + self.lateness <= watermark
        if expired.any():
            state.release(ids[expired])
            self.index = self.index.filter(~pl.Series(expired))

    def _oldest_end(self, event_time: int) -> int:
        """A row at ``event_time`` makes or extends a session ending at ``event_time + gap`` or
        later."""
        return event_time + self.gap

    def _merge_before_fire(self, watermark: int) -> bool:
        """Also when the watermark fires or purges a live session: a held row may extend it
        (merged on arrival, it would have before the advance)."""
        if super()._merge_before_fire(watermark):
            return True
        state = self.state
        if state is None or self.index.height == 0:
            return False
        ids = self.index.get_column(_ID).to_numpy()
        ends = state.end[ids]
        fires = (ends <= watermark) & state.dirty[ids]
        return bool(fires.any() or (ends + self.lateness <= watermark).any())

    def _held_windows(self) -> int:
        return self.index.height

    def _snapshot(self) -> OperatorState:
        """``session_window`` state: frames ``keys`` and ``rows`` (one row per live session, in
        :attr:`index` order; see :meth:`WindowState.dump`)."""
        frames: dict[str, pl.DataFrame] = {}
        if self.state is not None:
            ids = (
                self.index.get_column(_ID).to_numpy()
                if self.index.height
                else np.zeros(0, np.int64)
            )
            frames["keys"], frames["rows"] = self.state.dump(ids)
        return self._state(KIND, frames, {})

    def restore(self, state: OperatorState) -> None:
        """Replace everything with a :meth:`snapshot` (:class:`StateError` if it is not one of
        an operator defined like this one)."""
        self._restore_common(KIND, state)
        window_state = self.state
        if window_state is None or state.frame("rows").height == 0:
            return
        ids = window_state.load(state.frame("keys"), state.frame("rows"))
        self.index = pl.DataFrame(
            [
                *(window_state.keys[i].series(k, ids) for i, k in enumerate(self.keys)),
                pl.Series(_START, window_state.start[ids], dtype=pl.Int64),
                pl.Series(_END, window_state.end[ids], dtype=pl.Int64),
                pl.Series(_ID, ids, dtype=pl.Int64),
            ]
        )
