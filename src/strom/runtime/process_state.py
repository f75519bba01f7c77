"""A keyed process function's state as frames: per-key state, timers and buffered elements.

Layout of a ``keyed_process`` :class:`~strom.engine.contracts.OperatorState` (row-aligned pairs
keep user column names apart from the engine's):

- ``state_keys`` + ``state``: one row per (key, state): the key columns (their input types),
  ``kind`` (``value``/``list``/``map``), ``name`` and ``value``, the state's value as plain-data
  bytes (:mod:`strom.engine.values`: user state is whatever Python values the function stored,
  so it is encoded, never pickled; a value that is not plain data fails the snapshot).
- ``timer_keys`` + ``timers``: one row per live timer: ``domain``, ``time``, ``seq`` (the
  registration order, which breaks ties between equal times).
- ``buffer`` + ``buffer_order``: the elements awaiting the watermark (input columns), with
  their ``ts``, ``partition`` and ``position`` (their release order).
- ``input``: an empty frame of the input schema. Without it (no element seen yet) the core is
  empty and so are the other frames.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import polars as pl

from strom.engine.contracts import StateError
from strom.engine.keyed_process import DOMAINS, Key, KeyedProcessCore
from strom.engine.keys import key_value
from strom.engine.values import decode_column, encode_column

__all__ = ["core_frames", "core_meta", "restore_core"]


def core_frames(core: KeyedProcessCore, schema: pl.Schema | None) -> dict[str, pl.DataFrame]:
    """The core's state, timers and buffer as frames (inputs of ``schema``)."""
    assert not core.output, "snapshots are taken between messages"
    if schema is None:
        assert not core.state and not core.buffer, "state comes with elements, and a schema"
        return {}
    keys = core.keys
    state_keys: list[Key] = []
    kinds: list[str] = []
    names: list[str] = []
    values: list[Any] = []
    for key, slots in core.state.items():
        for (kind, name), value in slots.items():
            state_keys.append(key)
            kinds.append(kind)
            names.append(name)
            values.append(value)
    try:
        encoded = encode_column("value", values)
    except StateError as exc:
        raise StateError(f"{type(core.fn).__name__}: a state cannot be snapshotted: {exc}") from exc
    timers = [(d, *t) for d in DOMAINS for t in _live_timers(core, d)]
    buffer = core.buffer
    return {
        "input": pl.DataFrame(schema=schema),
        "state_keys": _key_frame(keys, state_keys, schema),
        "state": pl.DataFrame(
            [pl.Series("kind", kinds, pl.String), pl.Series("name", names, pl.String), encoded]
        ),
        "timer_keys": _key_frame(keys, [t[3] for t in timers], schema),
        "timers": pl.DataFrame(
            [
                pl.Series("domain", [t[0] for t in timers], pl.String),
                pl.Series("time", [t[1] for t in timers], pl.Int64),
                pl.Series("seq", [t[2] for t in timers], pl.Int64),
            ]
        ),
        "buffer": pl.from_dicts([e[3] for e in buffer], schema=schema),
        "buffer_order": pl.DataFrame(
            [pl.Series(c, [e[i] for e in buffer], pl.Int64) for i, c in enumerate(_ORDER)]
        ),
    }


_ORDER = ("ts", "partition", "position")


def core_meta(core: KeyedProcessCore) -> dict[str, Any]:
    return {
        "timer_seq": core.timer_seq,
        "watermark": core.watermark,
        "now_ms": core.now_ms,
        "finished": core.finished,
    }


def restore_core(
    core: KeyedProcessCore, frames: dict[str, pl.DataFrame], meta: dict[str, Any]
) -> None:
    """Replace the core's state, timers and buffer with those of :func:`core_frames`."""
    core.state, core.buffer, core.output = {}, [], []
    core.timers = {d: [] for d in DOMAINS}
    core.timer_index = {d: {} for d in DOMAINS}
    if "input" in frames:
        state = frames["state"]
        keys = _keys(core.keys, frames["state_keys"], state.height)
        values = decode_column(state.get_column("value"))
        for key, kind, name, value in zip(
            keys, state.get_column("kind"), state.get_column("name"), values, strict=True
        ):
            core.state.setdefault(key, {})[(kind, name)] = value
        timers = frames["timers"]
        timer_keys = _keys(core.keys, frames["timer_keys"], timers.height)
        for key, (domain, t, seq) in zip(timer_keys, timers.iter_rows(), strict=True):
            core.timers[domain].append((t, seq, key))
            core.timer_index[domain].setdefault(key, set()).add(t)
        for heap in core.timers.values():
            heapq.heapify(heap)
        order = frames["buffer_order"].iter_rows()
        rows = frames["buffer"].iter_rows(named=True)
        core.buffer = [(ts, p, pos, row) for (ts, p, pos), row in zip(order, rows, strict=True)]
        heapq.heapify(core.buffer)
    core.timer_seq = int(meta["timer_seq"])
    core.watermark = int(meta["watermark"])
    core.now_ms = float(meta["now_ms"])
    core.finished = bool(meta["finished"])


def _live_timers(core: KeyedProcessCore, domain: str) -> list[tuple[int, int, Key]]:
    """The timers that will fire, each once: a (key, time) re-registered after a delete may
    have two heap entries, and the earlier one (by registration) is the one that fires."""
    index = core.timer_index[domain]
    seen: set[tuple[Key, int]] = set()
    out = []
    for t, seq, key in sorted(core.timers[domain]):
        if t in index.get(key, ()) and (key, t) not in seen:
            seen.add((key, t))
            out.append((t, seq, key))
    return out


def _key_frame(names: Sequence[str], keys: list[Key], schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(
        [pl.Series(n, [k[i] for k in keys], schema[n]) for i, n in enumerate(names)]
    )


def _keys(names: Sequence[str], frame: pl.DataFrame, height: int) -> list[Key]:
    if not names:
        return [()] * height
    columns = (map(key_value, frame.get_column(n).to_list()) for n in names)
    return list(zip(*columns, strict=True))
