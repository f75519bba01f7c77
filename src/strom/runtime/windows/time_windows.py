"""Tumbling and hopping windows in the streaming runtime.

State is columnar (:class:`~strom.runtime.windows.state.WindowState`): each held (key, window) is a
dense row id; ``windows`` maps each ``window_end`` to a dict from key (the key value, or a tuple
of values for several key columns) to row id. A window's start is ``end - size``. Per row the
state keeps ``emitted`` (a result for the window has been sent, so later rows are
``is_update=True``) and ``dirty`` (the window changed since its last result).

Per batch: rows whose window ended at least ``allowed_lateness`` before the watermark go to the
late output (one row per missed window); the rest are pre-aggregated by Polars, looked up with
one dict operation per (key, window) group, and merged with NumPy. A window already complete (a
late event within lateness), or any changed window in ``update`` mode, emits right after the
batch, in the batch's group order. When the watermark reaches a window's end its dirty rows emit,
ordered by (end, start, ``repr`` of the key tuple); at ``end + allowed_lateness`` they are dropped.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from itertools import compress, repeat
from typing import Any

import numpy as np
import polars as pl

from strom.engine.constants import SEQ, TS
from strom.engine.contracts import OperatorState
from strom.engine.keys import row_keys
from strom.pipeline.plan import WindowAggNode
from strom.pipeline.windows import Hopping, Tumbling, assign_windows, window_start_exprs
from strom.runtime.watermarks import WatermarkTracker
from strom.runtime.windows.base import WindowOperatorBase
from strom.runtime.windows.slots import IdArray
from strom.runtime.windows.state import WindowState

KIND = "time_window"
_PANE = "__strom_pane"
_ROW = "__strom_row"


class TimeWindowOperator(WindowOperatorBase):
    def __init__(
        self, name: str, node: WindowAggNode, ts_column: str, tracker: WatermarkTracker
    ) -> None:
        super().__init__(name, node, ts_column, tracker)
        assert isinstance(node.window, Tumbling | Hopping)
        self.spec: Tumbling | Hopping = node.window
        self.size_ms = node.window.size_ms
        self.windows: dict[int, dict[Any, int]] = {}
        self.state: WindowState | None = None
        self._held = 0
        self._fire_heap: list[int] = []
        self._purge_heap: list[int] = []
        self._partial_exprs = self.acc.partial_exprs()
        self._slide = node.window.slide_ms if isinstance(node.window, Hopping) else self.size_ms
        self._panes = self._slide < self.size_ms and self.size_ms % self._slide == 0

    def _set_input_schema(self, schema: pl.Schema | None) -> None:
        super()._set_input_schema(schema)
        self.state = None
        if schema is not None:
            assert self._out_schema is not None
            self.state = WindowState.for_batches(
                self.keys, self.node.aggs, schema, self._partial_exprs, self._out_schema
            )

    def _process(self, partition: int, batch: pl.DataFrame, watermark: int) -> None:
        if self._panes and not self._any_expired(batch, watermark):
            self._process_panes(partition, batch, watermark)
            return
        assigned = assign_windows(batch, self.spec, TS)
        expired = pl.col("window_end") + self.lateness <= watermark
        self._late(partition, assigned.filter(expired))
        live = assigned.filter(~expired)
        if live.height == 0:
            return
        if self.acc.needs_order:
            live = live.sort(TS, SEQ)
        group = [*self.keys, "window_end"]
        partials = live.group_by(group, maintain_order=True).agg(self.acc.batch_exprs(live))
        ends = partials.get_column("window_end").to_numpy()
        ids = self._merge(partition, partials, [ends], watermark)[0]
        self._emit_touched(ids, watermark)

    def _oldest_end(self, event_time: int) -> int:
        """The earliest end of a window after ``event_time``: ends are ``offset + size`` plus
        multiples of the slide (a row at ``event_time`` falls in no window ending sooner)."""
        return (
            event_time
            - (event_time - self.spec.offset_ms - self.size_ms) % self._slide
            + (self._slide)
        )

    def _any_expired(self, batch: pl.DataFrame, watermark: int) -> bool:
        """Whether any (row, window) pair of ``batch`` is late (from its smallest event time)."""
        ts = batch.get_column(TS).min()
        assert isinstance(ts, int)
        return self._oldest_end(ts) + self.lateness <= watermark

    def _process_panes(self, partition: int, batch: pl.DataFrame, watermark: int) -> None:
        """Hopping windows whose size is a multiple of the slide, with nothing late.

        Rows are pre-aggregated per key and *pane* (the slide-long interval every window is a
        union of), then each pane's partial merges into its ``size / slide`` windows, one window
        offset at a time (so row ids within one merge stay unique). Results emitted after the
        batch follow the first appearance of each (key, window) in the row-by-window expansion.
        """
        live = batch.sort(TS, SEQ) if self.acc.needs_order else batch
        pane = window_start_exprs(self.spec, pl.col(TS))[0]
        live = live.with_columns(pane.alias(_PANE), pl.int_range(pl.len()).alias(_ROW))
        partials = live.group_by([*self.keys, _PANE], maintain_order=True).agg(
            pl.col(_ROW).first(), *self.acc.batch_exprs(live)
        )
        panes = partials.get_column(_PANE).to_numpy()
        count = self.size_ms // self._slide
        offsets = range(count)
        ends = [panes + (self.size_ms - j * self._slide) for j in offsets]
        merged = self._merge(partition, partials, ends, watermark)
        first = partials.get_column(_ROW).to_numpy().astype(np.int64) * count
        order = np.concatenate([first + j for j in offsets]).argsort(kind="stable")
        ids = np.concatenate(merged)[order]
        _, at = np.unique(ids, return_index=True)
        self._emit_touched(ids[np.sort(at)], watermark)

    def _merge(
        self,
        partition: int,
        partials: pl.DataFrame,
        ends_per_round: list[IdArray],
        watermark: int,
    ) -> list[IdArray]:
        """Merge every partial row into the window ``ends[row]`` for each ``ends`` given;
        returns the row ids, per round. Within a round each (key, window) occurs once."""
        state = self.state
        assert state is not None
        parts = state.read(partials)
        keys = row_keys(partials, self.keys)
        out: list[IdArray] = []
        for ends in ends_per_round:
            ids = np.empty(partials.height, np.int64)
            first_end = int(ends[0])
            if (ends == first_end).all():
                self._merge_window(
                    first_end, (partials, keys, parts), None, ids, partition, watermark
                )
            else:
                for end in np.unique(ends).tolist():
                    pos = np.flatnonzero(ends == end)
                    self._merge_window(
                        int(end), (partials, keys, parts), pos, ids, partition, watermark
                    )
            out.append(ids)
        return out

    def _emit_touched(self, ids: IdArray, watermark: int) -> None:
        """After a batch: results of changed windows already complete (or all, in update mode)."""
        assert self.state is not None
        ready = ids if self.update_mode else ids[self.state.end[ids] <= watermark]
        if ready.size:
            self._queue(self.state.results(ready, self.size_ms))

    def _merge_window(
        self,
        end: int,
        batch: tuple[pl.DataFrame, list[Any], list[list[Any]]],
        pos: IdArray | None,
        ids: IdArray,
        partition: int,
        watermark: int,
    ) -> None:
        """Merge partial rows ``pos`` (None: all) of ``batch`` (the partials, their keys and
        their slot arrays) into the window ending at ``end``; their row ids go to ``ids[pos]``."""
        partials, all_keys, parts = batch
        state = self.state
        assert state is not None
        index = self.windows.get(end)
        if index is None:
            index = self.windows[end] = {}
            heapq.heappush(self._purge_heap, end)
            if end > watermark:
                heapq.heappush(self._fire_heap, end)
        if pos is None:
            pos = np.arange(partials.height)
            keys = all_keys
        else:
            keys = list(map(all_keys.__getitem__, pos.tolist()))
        if index:
            found = np.fromiter(map(index.get, keys, repeat(-1)), np.int64, count=pos.size)
        else:
            found = np.full(pos.size, -1, np.int64)
        new = found < 0
        fresh = int(new.sum())
        if fresh:
            new_ids = state.allocate(fresh)
            found[new] = new_ids
            new_keys = keys if fresh == pos.size else list(compress(keys, new.tolist()))
            index.update(zip(new_keys, new_ids.tolist(), strict=True))
            self._held += fresh
            state.put(new_ids, end, partials, parts, pos[new], partition)
        if fresh < pos.size:
            old = ~new
            state.merge(found[old], parts, pos[old], partition)
        ids[pos] = found

    def _fire(self, watermark: int) -> None:
        state = self.state
        while self._fire_heap and self._fire_heap[0] <= watermark:
            end = heapq.heappop(self._fire_heap)
            index = self.windows.get(end)
            if not index or state is None:
                continue
            ids = np.fromiter(index.values(), np.int64, count=len(index))
            ids = ids[state.dirty[ids]]
            if ids.size:
                self._queue(state.results(state.emit_order(ids), self.size_ms))
        while self._purge_heap and self._purge_heap[0] + self.lateness <= watermark:
            end = heapq.heappop(self._purge_heap)
            index = self.windows.pop(end, None)
            if index and state is not None:
                state.release(np.fromiter(index.values(), np.int64, count=len(index)))
                self._held -= len(index)

    def _held_windows(self) -> int:
        return self._held

    def _snapshot(self) -> OperatorState:
        """``time_window`` state: frames ``keys`` and ``rows`` (one row per held key and window,
        grouped by window, windows in arrival order; see :meth:`WindowState.dump`), the
        windows' sizes in ``meta["windows"]`` (``[end, rows]`` runs) and the fire and purge
        heaps.

        The rows are found from the state's arrays, not by walking the windows' dicts: every
        held row belongs to exactly one window, the one whose end it holds (so this is NumPy
        work, no Python per row)."""
        frames: dict[str, pl.DataFrame] = {}
        runs: list[list[int]] = []
        if self.state is not None and self.windows:
            ids, counts = self._rows_by_window(self.state)
            runs = [[end, count] for end, count in zip(self.windows, counts, strict=True)]
            frames["keys"], frames["rows"] = self.state.dump(ids)
        elif self.state is not None:
            frames["keys"], frames["rows"] = self.state.dump(np.zeros(0, np.int64))
        meta = {"windows": runs, "fire": list(self._fire_heap), "purge": list(self._purge_heap)}
        return self._state(KIND, frames, meta)

    def _rows_by_window(self, state: WindowState) -> tuple[IdArray, list[int]]:
        """The held rows' ids grouped by window (in :attr:`windows` order; ascending within
        one), and each window's row count."""
        ids = state.live_ids()
        if ids.size != self._held:
            raise AssertionError(f"{self.name}: {ids.size} live rows, {self._held} held")
        if len(self.windows) == 1:
            return ids, [ids.size]
        ends = np.fromiter(self.windows, np.int64, count=len(self.windows))
        by_end = np.argsort(ends)
        rank = by_end[np.searchsorted(ends, state.end[ids], sorter=by_end)]
        order = np.argsort(rank, kind="stable")
        counts = np.bincount(rank, minlength=ends.size).tolist()
        return ids[order], counts

    def restore(self, state: OperatorState) -> None:
        """Replace everything with a :meth:`snapshot` (:class:`StateError` if it is not one of
        an operator defined like this one)."""
        self._restore_common(KIND, state)
        self.windows = {}
        self._held = 0
        runs = state.meta["windows"]
        if runs:
            assert self.state is not None  # rows imply an input schema
            keys = state.frame("keys")
            ids = self.state.load(keys, state.frame("rows"))
            values = row_keys(keys, self.keys) if keys.width else [()] * ids.size
            # a fresh state allocates ids 0, 1, ...: a range zips faster than a list of ints
            first = int(ids[0]) if ids.size else 0
            fresh = bool((ids == np.arange(first, first + ids.size)).all())
            id_values: Sequence[int] = range(first, first + ids.size) if fresh else ids.tolist()
            at = 0
            for end, count in runs:
                self.windows[int(end)] = dict(
                    zip(values[at : at + count], id_values[at : at + count], strict=True)
                )
                at += count
            self._held = at
        self._fire_heap = [int(e) for e in state.meta["fire"]]
        self._purge_heap = [int(e) for e in state.meta["purge"]]
