"""Per-record functions: keyed process functions (timers and state), ``map`` and ``flat_map``.

This is the documented slow path: executors call these once per record, in Python. Prefer
expressions and window aggregations wherever they can say the same thing.

A :class:`ProcessFunction` sees one key's elements and timers through a :class:`ProcessContext`.
Guarantees (both executors; see ``strom.engine.keyed_process`` for the mechanics):

- **Order.** With ``ordering="event_time"`` (the default) an element is processed once the
  watermark has passed it (``ts < watermark``); every callback of a key (elements and
  event-time timers) then runs in event-time order: elements by (event time, source partition,
  position in that partition), and a timer at ``t`` after every element with event time
  ``<= t``. With ``ordering="arrival"`` each micro-batch is processed as soon as it arrives,
  in (event time, partition, position) order within the batch.
- **Timers.** An event-time timer at ``t`` fires once the watermark is past ``t``; timers of a key
  fire in timestamp order, and a key has at most one timer per (domain, timestamp). A
  processing-time timer fires once the executor's clock reaches it. When every input has ended
  the watermark becomes +inf: every event-time timer fires (including ones registered meanwhile
  — stop re-registering when ``ctx.current_watermark == MAX_WATERMARK``), then every pending
  processing-time timer fires once; processing-time timers registered after that are dropped.
- **Equality.** With ``ordering="event_time"``, for input whose disorder stays within the
  source's ``max_out_of_orderness_ms``, the streaming runtime and the bounded runner make the same
  calls in the same per-key order, so a function that reads neither ``current_watermark`` nor
  processing time produces the same rows.
- **State** is per key and part of the operator's snapshot. Store plain data (None, bool, int,
  float, str, bytes, list, tuple, dict, set, datetime, date, time, timedelta, Decimal, nested
  freely): snapshots encode it as such (:mod:`strom.engine.values`; never pickle, so restoring
  runs no code), and a snapshot of anything else fails naming its type.

Example — three failed payments from one card within a minute raise one alert:

>>> import polars as pl
>>> from strom import MemorySink, MemorySource, Pipeline, ProcessContext, ProcessFunction
>>> class ThreeFailures(ProcessFunction):
...     def process_element(self, row, ctx):
...         if row["status"] != "failed":
...             return
...         failures = ctx.list_state("failures")
...         recent = [t for t in failures.get() if ctx.timestamp - t < 60_000] + [ctx.timestamp]
...         if len(recent) >= 3:
...             ctx.emit({"card": ctx.key, "first_ts": recent[0], "last_ts": recent[-1],
...                       "count": len(recent)})
...             failures.clear()
...         else:
...             failures.update(recent)
...             ctx.register_event_time_timer(ctx.timestamp + 60_000)  # state cleanup
...     def on_timer(self, timestamp, ctx):
...         failures = ctx.list_state("failures")
...         recent = [t for t in failures.get() if timestamp - t < 60_000]
...         failures.update(recent) if recent else failures.clear()
>>> rows = [{"card": "c1", "ts": t, "status": "failed"} for t in (0, 20_000, 50_000, 200_000)]
>>> p = Pipeline()
>>> alerts = p.source(MemorySource([[rows]]), timestamp="ts").key_by("card").process(
...     ThreeFailures(),
...     output_schema={"card": pl.String, "first_ts": pl.Int64, "last_ts": pl.Int64,
...                    "count": pl.Int64})
>>> alerts.sink(sink := MemorySink())
>>> from strom import run_streaming
>>> _ = run_streaming(p)
>>> sink.to_frame().rows()
[('c1', 0, 50000, 3)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

Row = dict[str, Any]
Ordering = Literal["event_time", "arrival"]
TimeDomain = Literal["event_time", "processing_time"]

MapFn = Callable[[Row], Mapping[str, Any]]
FlatMapFn = Callable[[Row], Iterable[Mapping[str, Any]]]


class ValueState(Protocol):
    """One value per key (``None`` until set)."""

    def value(self) -> Any: ...

    def update(self, value: Any) -> None: ...

    def clear(self) -> None: ...


class ListState(Protocol):
    """A list per key. :meth:`get` returns a copy: change the state through the methods."""

    def get(self) -> list[Any]: ...

    def add(self, value: Any) -> None: ...

    def add_all(self, values: Iterable[Any]) -> None: ...

    def update(self, values: Iterable[Any]) -> None: ...

    def clear(self) -> None: ...


class MapState(Protocol):
    """A dictionary per key. :meth:`items` and friends return copies."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def put(self, key: Any, value: Any) -> None: ...

    def remove(self, key: Any) -> None: ...

    def contains(self, key: Any) -> bool: ...

    def items(self) -> list[tuple[Any, Any]]: ...

    def keys(self) -> list[Any]: ...

    def values(self) -> list[Any]: ...

    def is_empty(self) -> bool: ...

    def clear(self) -> None: ...


class ProcessContext(Protocol):
    """What a :class:`ProcessFunction` sees during one callback."""

    @property
    def key(self) -> Any:
        """The current key: the value for one key column, a tuple for several."""
        ...

    @property
    def timestamp(self) -> int | None:
        """The element's event time (ms), or the firing timer's time in :meth:`on_timer`;
        ``None`` for elements of a stream without event time."""
        ...

    @property
    def time_domain(self) -> TimeDomain | None:
        """In :meth:`ProcessFunction.on_timer`, which kind of timer fired; else ``None``."""
        ...

    @property
    def current_watermark(self) -> int:
        """The operator's watermark (``MAX_WATERMARK`` once every input has ended; always
        ``MAX_WATERMARK`` in the bounded runner)."""
        ...

    @property
    def current_processing_time(self) -> float:
        """The executor clock, in milliseconds."""
        ...

    def value_state(self, name: str) -> ValueState: ...

    def list_state(self, name: str) -> ListState: ...

    def map_state(self, name: str) -> MapState: ...

    def register_event_time_timer(self, timestamp: int) -> None: ...

    def register_processing_time_timer(self, timestamp: int) -> None: ...

    def delete_event_time_timer(self, timestamp: int) -> None: ...

    def delete_processing_time_timer(self, timestamp: int) -> None: ...

    def emit(self, row: Mapping[str, Any]) -> None:
        """Output one row (columns of the declared ``output_schema``; missing ones are null)."""
        ...


class ProcessFunction:
    """Subclass and implement :meth:`process_element` (and :meth:`on_timer` if you set timers).

    Keep all per-key data in the context's state, not on ``self``: one instance serves every key,
    and only context state is snapshotted.
    """

    def process_element(self, row: Row, ctx: ProcessContext) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement process_element()")

    def on_timer(self, timestamp: int, ctx: ProcessContext) -> None:
        """Called when a timer of ``ctx.key`` fires; the default does nothing."""
