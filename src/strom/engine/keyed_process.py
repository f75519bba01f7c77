"""The engine of keyed process functions, shared by the streaming runtime and the bounded runner.

State layout (snapshotted as frames by :mod:`strom.runtime.process_state`):

- ``state``: key tuple -> ``{(kind, name): value}`` with kind ``"value"``, ``"list"`` or
  ``"map"``; a cleared or emptied state is removed, and a key with no state disappears.
- ``buffer``: a heap of ``(event_time, partition, position, row)`` awaiting release; the first
  three fields are unique, so rows are never compared.
- ``timers[domain]``: a heap of ``(time, registration_seq, key)`` plus ``timer_index[domain]``,
  key -> set of live times. Deleting a timer removes it from the index only; heap entries not
  in the index are skipped when popped. A (key, domain, time) is live at most once.

:meth:`KeyedProcessCore.release` is the one scheduling loop. It repeatedly takes the smallest of
the next releasable element (``event_time < watermark``, or any buffered element in
``"arrival"`` ordering) and the next event-time timer with ``time < watermark``, the element
first on equal times. A timer registered for an earlier time than the current callback's
is therefore the very next callback. Because in-bound events arrive before the watermark passes
them, releasing in watermark steps produces, per key, exactly the sequence of callbacks that one
release at +inf over all events produces: the streaming/bounded equality guarantee.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from strom.engine.constants import MAX_WATERMARK, MIN_WATERMARK
from strom.engine.keys import key_value
from strom.pipeline.process import (
    ListState,
    MapState,
    Ordering,
    ProcessContext,
    ProcessFunction,
    Row,
    TimeDomain,
    ValueState,
)

Key = tuple[Any, ...]
Slot = tuple[str, str]
DOMAINS: tuple[TimeDomain, TimeDomain] = ("event_time", "processing_time")


class KeyedProcessCore:
    """Buffers elements, keeps per-key state and timers, and calls the :class:`ProcessFunction`.

    Output rows collect in :attr:`output` until :meth:`take_output`.
    """

    def __init__(
        self,
        fn: ProcessFunction,
        keys: tuple[str, ...],
        ordering: Ordering,
        has_event_time: bool,
    ) -> None:
        self.fn = fn
        self.keys = keys
        self.ordering = ordering
        self.has_event_time = has_event_time
        self.state: dict[Key, dict[Slot, Any]] = {}
        self.buffer: list[tuple[int, int, int, Row]] = []
        self.timers: dict[str, list[tuple[int, int, Key]]] = {d: [] for d in DOMAINS}
        self.timer_index: dict[str, dict[Key, set[int]]] = {d: {} for d in DOMAINS}
        self.timer_seq = 0
        self.watermark = MIN_WATERMARK
        self.now_ms = 0.0
        self.output: list[Row] = []
        self.finished = False
        self._ctx = _Context(self)

    def add(self, event_time: int | None, partition: int, position: int, row: Row) -> None:
        """Buffer one element (its ``event_time`` is ``None`` without event time)."""
        ts = MIN_WATERMARK if event_time is None else event_time
        heapq.heappush(self.buffer, (ts, partition, position, row))

    def release(self, watermark: int) -> None:
        """Run every callback that ``watermark`` makes due (see the module docstring)."""
        self.watermark = max(self.watermark, watermark)
        arrival = self.ordering == "arrival"
        heap = self.timers["event_time"]
        while True:
            timer = self._peek("event_time")
            elem_ready = bool(self.buffer) and (arrival or self.buffer[0][0] < self.watermark)
            timer_ready = timer is not None and timer[0] < self.watermark
            if elem_ready and (not timer_ready or self.buffer[0][0] <= heap[0][0]):
                ts, _, _, row = heapq.heappop(self.buffer)
                key = tuple(key_value(row[k]) for k in self.keys)
                self._ctx.enter(key, ts if self.has_event_time else None, None)
                self.fn.process_element(row, self._ctx)
            elif timer_ready:
                self._fire("event_time")
            else:
                return

    def fire_processing_timers(self, now_ms: float) -> None:
        """Fire processing-time timers due at ``now_ms``, in time order."""
        self.now_ms = now_ms
        while True:
            timer = self._peek("processing_time")
            if timer is None or timer[0] > now_ms:
                return
            self._fire("processing_time")

    def finish(self) -> None:
        """End of input: release everything at +inf, then fire each pending processing-time
        timer once (those registered from now on are dropped). Idempotent."""
        if self.finished:
            return
        self.release(MAX_WATERMARK)
        pending = self._pending("processing_time")
        self.finished = True
        for t, _, key in pending:
            if t in self.timer_index["processing_time"].get(key, ()):
                self._remove_timer("processing_time", key, t)
                self._ctx.enter(key, t, "processing_time")
                self.fn.on_timer(t, self._ctx)
                self.release(MAX_WATERMARK)
        self.timers["processing_time"].clear()
        self.timer_index["processing_time"].clear()

    def rebase_clock(self, shift_ms: float) -> None:
        """Move processing time and every processing-time timer by ``shift_ms`` (rounded to
        whole ms for timers), keeping each timer's distance from now: restored state read
        another clock. Registration order (``seq``) is kept, so equal times fire as before."""
        self.now_ms += shift_ms
        shift = round(shift_ms)
        domain = "processing_time"
        self.timers[domain] = [(t + shift, seq, key) for t, seq, key in self.timers[domain]]
        heapq.heapify(self.timers[domain])
        self.timer_index[domain] = {
            key: {t + shift for t in times} for key, times in self.timer_index[domain].items()
        }

    def take_output(self) -> list[Row]:
        """The rows emitted since the last call, in emission order."""
        rows, self.output = self.output, []
        return rows

    def _pending(self, domain: str) -> list[tuple[int, int, Key]]:
        index = self.timer_index[domain]
        return sorted(e for e in self.timers[domain] if e[0] in index.get(e[2], ()))

    def _peek(self, domain: str) -> tuple[int, int, Key] | None:
        heap, index = self.timers[domain], self.timer_index[domain]
        while heap:
            t, _, key = heap[0]
            if t in index.get(key, ()):
                return heap[0]
            heapq.heappop(heap)  # deleted or already fired
        return None

    def _fire(self, domain: TimeDomain) -> None:
        t, _, key = heapq.heappop(self.timers[domain])
        self._remove_timer(domain, key, t)
        self._ctx.enter(key, t, domain)
        self.fn.on_timer(t, self._ctx)

    def register_timer(self, domain: TimeDomain, key: Key, t: int) -> None:
        if self.finished and domain == "processing_time":
            return
        times = self.timer_index[domain].setdefault(key, set())
        if t in times:
            return
        times.add(t)
        self.timer_seq += 1
        heapq.heappush(self.timers[domain], (t, self.timer_seq, key))

    def _remove_timer(self, domain: str, key: Key, t: int) -> None:
        times = self.timer_index[domain].get(key)
        if times is None:
            return
        times.discard(t)
        if not times:
            del self.timer_index[domain][key]

    def delete_timer(self, domain: TimeDomain, key: Key, t: int) -> None:
        self._remove_timer(domain, key, t)

    def state_size(self) -> int:
        """Keys holding state or timers, plus buffered elements."""
        keys = set(self.state)
        for index in self.timer_index.values():
            keys.update(index)
        return len(keys) + len(self.buffer)


class _Context:
    """The :class:`ProcessContext` handed to every callback; re-aimed at each key."""

    def __init__(self, core: KeyedProcessCore) -> None:
        self._core = core
        self._key: Key = ()
        self._timestamp: int | None = None
        self._domain: TimeDomain | None = None

    def enter(self, key: Key, timestamp: int | None, domain: TimeDomain | None) -> None:
        self._key, self._timestamp, self._domain = key, timestamp, domain

    @property
    def key(self) -> Any:
        return self._key[0] if len(self._key) == 1 else self._key

    @property
    def timestamp(self) -> int | None:
        return self._timestamp

    @property
    def time_domain(self) -> TimeDomain | None:
        return self._domain

    @property
    def current_watermark(self) -> int:
        return self._core.watermark

    @property
    def current_processing_time(self) -> float:
        return self._core.now_ms

    def value_state(self, name: str) -> ValueState:
        return _ValueState(self._core.state, self._key, ("value", name))

    def list_state(self, name: str) -> ListState:
        return _ListState(self._core.state, self._key, ("list", name))

    def map_state(self, name: str) -> MapState:
        return _MapState(self._core.state, self._key, ("map", name))

    def register_event_time_timer(self, timestamp: int) -> None:
        self._core.register_timer("event_time", self._key, _time(timestamp))

    def register_processing_time_timer(self, timestamp: int) -> None:
        self._core.register_timer("processing_time", self._key, _time(timestamp))

    def delete_event_time_timer(self, timestamp: int) -> None:
        self._core.delete_timer("event_time", self._key, _time(timestamp))

    def delete_processing_time_timer(self, timestamp: int) -> None:
        self._core.delete_timer("processing_time", self._key, _time(timestamp))

    def emit(self, row: Mapping[str, Any]) -> None:
        self._core.output.append(dict(row))


def _time(timestamp: int) -> int:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise TypeError(f"timer timestamps are integer milliseconds, got {timestamp!r}")
    return int(timestamp)


class _Slot:
    def __init__(self, store: dict[Key, dict[Slot, Any]], key: Key, slot: Slot) -> None:
        self._store, self._key, self._slot = store, key, slot

    def _get(self) -> Any:
        return self._store.get(self._key, {}).get(self._slot)

    def _set(self, value: Any) -> None:
        self._store.setdefault(self._key, {})[self._slot] = value

    def clear(self) -> None:
        slots = self._store.get(self._key)
        if slots is not None:
            slots.pop(self._slot, None)
            if not slots:
                del self._store[self._key]


class _ValueState(_Slot):
    def value(self) -> Any:
        return self._get()

    def update(self, value: Any) -> None:
        if value is None:
            self.clear()
        else:
            self._set(value)


class _ListState(_Slot):
    def get(self) -> list[Any]:
        return list(self._get() or ())

    def add(self, value: Any) -> None:
        self.add_all((value,))

    def add_all(self, values: Iterable[Any]) -> None:
        current = self._get()
        if current is None:
            self.update(values)
        else:
            current.extend(values)

    def update(self, values: Iterable[Any]) -> None:
        items = list(values)
        if items:
            self._set(items)
        else:
            self.clear()


class _MapState(_Slot):
    def _map(self) -> dict[Any, Any]:
        current = self._get()
        return current if current is not None else {}

    def get(self, key: Any, default: Any = None) -> Any:
        return self._map().get(key, default)

    def put(self, key: Any, value: Any) -> None:
        current = self._get()
        if current is None:
            self._set({key: value})
        else:
            current[key] = value

    def remove(self, key: Any) -> None:
        current = self._get()
        if current is not None:
            current.pop(key, None)
            if not current:
                self.clear()

    def contains(self, key: Any) -> bool:
        return key in self._map()

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._map().items())

    def keys(self) -> list[Any]:
        return list(self._map())

    def values(self) -> list[Any]:
        return list(self._map().values())

    def is_empty(self) -> bool:
        return not self._map()


def _is_context(ctx: _Context) -> ProcessContext:
    return ctx  # mypy checks that _Context satisfies the ProcessContext protocol
