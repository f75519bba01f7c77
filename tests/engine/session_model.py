"""The per-session reference model of session windows: strom's first session operator, kept as
the oracle the columnar one (:mod:`strom.runtime.windows.sessions`) is compared with.

State: ``sessions`` maps a key tuple to its disjoint sessions sorted by start, each
``[start, end, accumulator, emitted, dirty]``. A batch is first cut into per-key mini-sessions by
Polars (sorted by event time; a new one starts where consecutive events are ``>= gap`` apart),
then each mini-session is merged into the key's sessions: every overlapping session is absorbed
(a late event can bridge two sessions). The merged session counts as emitted if any absorbed
session was, so its next result is ``is_update=True`` and supersedes them (its interval contains
theirs). A merged session already ending ``allowed_lateness`` before the watermark is late: its
rows go to the late output with the mini-session's interval as ``window_start``/``window_end``.

Caveat: a session's state is dropped at ``end + allowed_lateness``; a later event that would
have bridged into it opens a new session instead (as in Flink).
"""

from __future__ import annotations

import heapq
from typing import Any

import polars as pl

from strom.engine.constants import SEQ, SESSION, TS
from strom.engine.sessions import cut_sessions
from strom.pipeline.plan import WindowAggNode
from strom.pipeline.windows import Session
from strom.runtime.watermarks import WatermarkTracker
from strom.runtime.windows.base import WindowOperatorBase


class ReferenceSessionOperator(WindowOperatorBase):
    def __init__(
        self, name: str, node: WindowAggNode, ts_column: str, tracker: WatermarkTracker
    ) -> None:
        super().__init__(name, node, ts_column, tracker)
        assert isinstance(node.window, Session)
        self.gap = node.window.gap_ms
        self.sessions: dict[tuple[Any, ...], list[list[Any]]] = {}
        self._fire_heap: list[tuple[int, int, tuple[Any, ...]]] = []
        self._purge_heap: list[tuple[int, int, tuple[Any, ...]]] = []
        self._tiebreak = 0  # heap entries never compare keys (they may not be orderable)

    def _process(self, partition: int, batch: pl.DataFrame, watermark: int) -> None:
        cut = cut_sessions(batch, self.keys, self.gap, [TS, SEQ])
        group = [*self.keys, SESSION]
        partials = cut.group_by(group, maintain_order=True).agg(
            pl.col(TS).min().alias("__start"),
            (pl.col(TS).max() + self.gap).alias("__end"),
            *self.acc.partial_exprs(),
        )
        n = len(self.keys)
        late: list[tuple[Any, ...]] = []
        touched: dict[tuple[Any, ...], None] = {}
        for row in partials.iter_rows():
            key, mini, start, end = row[:n], row[n], row[n + 1], row[n + 2]
            acc = self.acc.from_partial(row[n + 3 :], partition)
            if not self._merge(key, start, end, acc, watermark):
                late.append((*key, mini, start, end))
            else:
                touched[key] = None
        if late:
            marks = pl.DataFrame(
                late,
                schema=[
                    *cut.select(group).schema.items(),
                    ("window_start", pl.Int64),
                    ("window_end", pl.Int64),
                ],
                orient="row",
            )
            self._late(partition, cut.join(marks, on=group, nulls_equal=True).drop(SESSION))
        for key in touched:
            for session in self.sessions[key]:
                if session[4] and (session[1] <= watermark or self.update_mode):
                    self._emit_session(key, session)

    def _merge(self, key: tuple[Any, ...], start: int, end: int, acc: list[Any], wm: int) -> bool:
        """Merge ``[start, end)`` into ``key``'s sessions; False (and no change) if late."""
        sessions = self.sessions.setdefault(key, [])
        keep: list[list[Any]] = []
        merged: list[Any] = [start, end, acc, False, True]
        for s in sessions:
            if s[0] < merged[1] and merged[0] < s[1]:
                merged[0], merged[1] = min(merged[0], s[0]), max(merged[1], s[1])
                self.acc.merge(merged[2], s[2])
                merged[3] = merged[3] or s[3]
            else:
                keep.append(s)
        if merged[1] + self.lateness <= wm:
            if not sessions:
                del self.sessions[key]
            return False
        keep.append(merged)
        keep.sort(key=lambda s: s[0])
        self.sessions[key] = keep
        self._tiebreak += 1
        if merged[1] > wm:
            heapq.heappush(self._fire_heap, (merged[1], self._tiebreak, key))
        heapq.heappush(self._purge_heap, (merged[1] + self.lateness, self._tiebreak, key))
        return True

    def _emit_session(self, key: tuple[Any, ...], session: list[Any]) -> None:
        self._result(key, session[0], session[1], session[2], update=session[3])
        session[3], session[4] = True, False

    def _fire(self, watermark: int) -> None:
        while self._fire_heap and self._fire_heap[0][0] <= watermark:
            _, _, key = heapq.heappop(self._fire_heap)
            for session in self.sessions.get(key, ()):
                if session[4] and session[1] <= watermark:
                    self._emit_session(key, session)
        while self._purge_heap and self._purge_heap[0][0] <= watermark:
            _, _, key = heapq.heappop(self._purge_heap)
            sessions = self.sessions.get(key)
            if sessions is None:
                continue
            alive = [s for s in sessions if s[1] + self.lateness > watermark]
            if alive:
                self.sessions[key] = alive
            else:
                del self.sessions[key]

    def state_size(self) -> int:
        return sum(len(s) for s in self.sessions.values())
