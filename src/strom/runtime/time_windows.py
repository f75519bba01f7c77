"""Tumbling and hopping windows in the streaming runtime.

State (plain data, snapshot-able): ``windows`` maps ``(*key, window_start)`` to
``[window_end, accumulator, emitted, dirty]``; ``by_end`` maps each ``window_end`` to the set of
state keys ending there. ``emitted`` says a result for the window has been sent (later rows are
``is_update=True``); ``dirty`` says the window changed since its last result.

Per batch: rows whose window ended at least ``allowed_lateness`` before the watermark go to the
late output (one row per missed window); the rest are pre-aggregated by Polars and merged. A
window already complete (a late event within lateness), or any changed window in ``update`` mode,
emits right after the batch. When the watermark reaches a window's end the window emits if dirty;
when it reaches ``end + allowed_lateness`` the window's state is dropped.
"""

from __future__ import annotations

import copy
import heapq
from typing import Any

import polars as pl

from strom.pipeline.plan import WindowAggNode
from strom.pipeline.windows import Hopping, Tumbling, assign_windows
from strom.runtime.accumulators import SEQ, TS
from strom.runtime.watermarks import WatermarkTracker
from strom.runtime.window_base import WindowOperatorBase

StateKey = tuple[Any, ...]


class TimeWindowOperator(WindowOperatorBase):
    def __init__(
        self, name: str, node: WindowAggNode, ts_column: str, tracker: WatermarkTracker
    ) -> None:
        super().__init__(name, node, ts_column, tracker)
        assert isinstance(node.window, Tumbling | Hopping)
        self.spec: Tumbling | Hopping = node.window
        self.windows: dict[StateKey, list[Any]] = {}
        self.by_end: dict[int, set[StateKey]] = {}
        self._fire_heap: list[int] = []
        self._purge_heap: list[int] = []

    def _process(self, partition: int, batch: pl.DataFrame) -> None:
        watermark = self.watermark
        assigned = assign_windows(batch, self.spec, TS)
        expired = pl.col("window_end") + self.lateness <= watermark
        self._late(partition, assigned.filter(expired))
        live = assigned.filter(~expired)
        if live.height == 0:
            return
        if self.acc.needs_order:
            live = live.sort(TS, SEQ)
        group = [*self.keys, "window_start", "window_end"]
        partials = live.group_by(group, maintain_order=True).agg(self.acc.partial_exprs())
        touched: list[StateKey] = []
        n_keys = len(self.keys)
        for row in partials.iter_rows():
            state_key = row[: n_keys + 1]
            end = row[n_keys + 1]
            partial = self.acc.from_partial(row[n_keys + 2 :], partition)
            entry = self.windows.get(state_key)
            if entry is None:
                self.windows[state_key] = [end, partial, False, True]
                bucket = self.by_end.get(end)
                if bucket is None:
                    self.by_end[end] = {state_key}
                    heapq.heappush(self._purge_heap, end)
                    if end > watermark:
                        heapq.heappush(self._fire_heap, end)
                else:
                    bucket.add(state_key)
            else:
                self.acc.merge(entry[1], partial)
                entry[3] = True
            touched.append(state_key)
        for state_key in touched:
            entry = self.windows[state_key]
            if entry[3] and (entry[0] <= watermark or self.update_mode):
                self._emit_window(state_key, entry)

    def _emit_window(self, state_key: StateKey, entry: list[Any]) -> None:
        start = state_key[-1]
        self._result(state_key[:-1], start, entry[0], entry[1], update=entry[2])
        entry[2], entry[3] = True, False

    def _fire(self, watermark: int) -> None:
        fired: list[tuple[StateKey, list[Any]]] = []
        while self._fire_heap and self._fire_heap[0] <= watermark:
            end = heapq.heappop(self._fire_heap)
            for state_key in self.by_end.get(end, ()):
                entry = self.windows[state_key]
                if entry[3]:
                    fired.append((state_key, entry))
        for state_key, entry in sorted(fired, key=_emit_order):
            self._emit_window(state_key, entry)
        while self._purge_heap and self._purge_heap[0] + self.lateness <= watermark:
            end = heapq.heappop(self._purge_heap)
            for state_key in self.by_end.pop(end, ()):
                del self.windows[state_key]

    def state_size(self) -> int:
        return len(self.windows)

    def snapshot(self) -> dict[str, Any]:
        """The operator's whole state as plain data (a deep copy)."""
        return copy.deepcopy(
            {
                "windows": self.windows,
                "seq": self._seq,
                "fire": self._fire_heap,
                "purge": self._purge_heap,
                "watermarks": self.tracker.snapshot(),
                "input_schema": self._input_schema,
            }
        )

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot`."""
        state = copy.deepcopy(snapshot)
        self.windows = state["windows"]
        self._seq = state["seq"]
        self._fire_heap = state["fire"]
        self._purge_heap = state["purge"]
        self.by_end = {}
        for state_key, entry in self.windows.items():
            self.by_end.setdefault(entry[0], set()).add(state_key)
        self.tracker.restore(state["watermarks"])
        self._set_input_schema(state["input_schema"])


def _emit_order(item: tuple[StateKey, list[Any]]) -> tuple[int, int, str]:
    state_key, entry = item
    return (entry[0], state_key[-1], repr(state_key[:-1]))
