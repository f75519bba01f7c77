"""Columnar state for keyed windows: dense row ids, per-row flags, key values and slots.

Every held (key, window) is one *row*: an integer id into arrays that grow by doubling. Purged
rows' ids are reused (a free list). Per row: the window's start (session windows; a time window's
is ``end - size``) and end, ``emitted`` (a result was sent, so the next one is an update),
``dirty`` (changed since its last result), the key columns, and each aggregation's
:mod:`~strom.runtime.windows.slots`. Which row a key has is the caller's business
(a dict per window in :mod:`~strom.runtime.windows.time_windows`); this module does arrays only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from strom.engine.aggregations import Aggregation
from strom.engine.constants import PART, SEQ, TS
from strom.engine.overflow import describe_group
from strom.runtime.windows.slots import (
    Array,
    IdArray,
    RowOverflow,
    Slots,
    Values,
    grown,
    make_slots,
)

_POW10 = np.array([10**i for i in range(20)], dtype=np.uint64)


class WindowState:
    """Rows of window state for ``keys`` and ``aggs`` over inputs of ``input_schema``."""

    def __init__(
        self,
        keys: Sequence[str],
        aggs: Sequence[Aggregation],
        input_schema: pl.Schema,
        partial_columns: Sequence[str],
        out_schema: pl.Schema,
        capacity: int = 1024,
    ) -> None:
        self.key_names = list(keys)
        self.out_schema = out_schema
        self.capacity = capacity
        self.size = 0  # rows ever allocated (ids below this are in use or free)
        self._free: list[IdArray] = []
        self.start: Array = np.zeros(capacity, np.int64)
        self.end: Array = np.zeros(capacity, np.int64)
        self.emitted: Array = np.zeros(capacity, bool)
        self.dirty: Array = np.zeros(capacity, bool)
        self.keys = [Values(input_schema[k], capacity) for k in keys]
        self.slots: list[Slots[Any]] = [
            make_slots(i, a, input_schema, partial_columns, capacity) for i, a in enumerate(aggs)
        ]
        self._int_keys = all(
            v.numeric and v.dtype.is_integer() and v.dtype != pl.UInt64 for v in self.keys
        )

    @classmethod
    def for_batches(
        cls,
        keys: Sequence[str],
        aggs: Sequence[Aggregation],
        input_schema: pl.Schema,
        partial_exprs: Sequence[pl.Expr],
        out_schema: pl.Schema,
    ) -> WindowState:
        """State for a window operator's batches: ``input_schema`` plus the runtime's event
        time, sequence and partition columns, pre-aggregated by ``partial_exprs``."""
        columns = pl.LazyFrame(schema=input_schema).with_columns(
            pl.lit(0, pl.Int64).alias(c) for c in (TS, SEQ, PART)
        )
        partial_columns = columns.select(partial_exprs).collect_schema().names()
        return cls(keys, aggs, input_schema, partial_columns, out_schema)

    # -- rows --------------------------------------------------------------------------------

    def allocate(self, count: int) -> IdArray:
        """Ids for ``count`` new rows (freed ids first, then fresh ones)."""
        taken: list[IdArray] = []
        need = count
        while need and self._free:
            chunk = self._free.pop()
            if chunk.size > need:
                self._free.append(chunk[need:])
                chunk = chunk[:need]
            taken.append(chunk)
            need -= chunk.size
        if need:
            start = self.size
            self.size += need
            if self.size > self.capacity:
                self._grow(max(self.size, 2 * self.capacity))
            taken.append(np.arange(start, start + need, dtype=np.int64))
        return taken[0] if len(taken) == 1 else np.concatenate(taken)

    def release(self, ids: IdArray) -> None:
        """Rows ``ids`` are no longer held."""
        if ids.size:
            for slots in self.slots:
                slots.clear(ids)
            for values in self.keys:
                values.clear(ids)
            self._free.append(ids)

    def _grow(self, capacity: int) -> None:
        self.capacity = capacity
        self.start = grown(self.start, capacity)
        self.end = grown(self.end, capacity)
        self.emitted = grown(self.emitted, capacity)
        self.dirty = grown(self.dirty, capacity)
        for values in self.keys:
            values.grow(capacity)
        for slots in self.slots:
            slots.grow(capacity)

    # -- batches -----------------------------------------------------------------------------

    def read(self, partials: pl.DataFrame) -> list[list[Array]]:
        """Every aggregation's partial columns as arrays (read once per batch)."""
        return [slots.read(partials) for slots in self.slots]

    def put(
        self,
        ids: IdArray,
        end: int | IdArray,
        partials: pl.DataFrame,
        parts: list[list[Array]],
        pos: IdArray,
        partition: int,
    ) -> None:
        """Rows ``ids`` are new in the window ending at ``end`` (one, or one per row): keys and
        state from ``pos``."""
        self.end[ids] = end
        self.emitted[ids] = False
        self.dirty[ids] = True
        rows = pl.Series(pos)
        for name, values in zip(self.key_names, self.keys, strict=True):
            values.put(ids, *values.read(partials.get_column(name).gather(rows)))
        for slots, part in zip(self.slots, parts, strict=True):
            slots.put(ids, part, pos, partition)

    def merge(self, ids: IdArray, parts: list[list[Array]], pos: IdArray, partition: int) -> None:
        self.dirty[ids] = True
        for slots, part in zip(self.slots, parts, strict=True):
            slots.merge(ids, part, pos, partition)

    def absorb(self, ids: IdArray, sources: IdArray) -> None:
        """Fold rows ``sources`` into rows ``ids`` (pairwise; ids unique, none a source): the
        caller then releases the sources. A row absorbing an emitted row counts as emitted."""
        self.dirty[ids] = True
        self.emitted[ids] |= self.emitted[sources]
        for slots in self.slots:
            slots.absorb(ids, sources)

    # -- results -----------------------------------------------------------------------------

    def results(
        self, ids: IdArray, size_ms: int | None, *, window_columns: bool = True
    ) -> pl.DataFrame:
        """Result rows for ``ids`` (in that order); marks them emitted and clean. Window starts
        are ``end - size_ms``, or each row's own start when ``size_ms`` is None (sessions);
        without ``window_columns`` (a keyed aggregation, no window) there are none."""
        schema = self.out_schema
        columns = [v.series(k, ids) for k, v in zip(self.key_names, self.keys, strict=True)]
        if window_columns:
            end = self.end[ids]
            start = self.start[ids] if size_ms is None else end - size_ms
            columns.append(pl.Series("window_start", start, dtype=pl.Int64))
            columns.append(pl.Series("window_end", end, dtype=pl.Int64))
        try:
            columns += [slots.output(ids, schema[slots.agg.name]) for slots in self.slots]
        except RowOverflow as exc:  # name the group: its keys and window
            at = np.flatnonzero(ids == exc.row)[:1]
            group = {c.name: c.gather(at).item() for c in columns}
            raise exc.agg.overflow(exc.total, describe_group(group)) from None
        columns.append(pl.Series("is_update", self.emitted[ids], dtype=pl.Boolean))
        self.emitted[ids] = True
        self.dirty[ids] = False
        return pl.DataFrame(columns)

    def emit_order(self, ids: IdArray) -> IdArray:
        """``ids`` sorted as ``repr`` sorts their key tuples (the order results are emitted)."""
        if not self.keys or ids.size < 2:
            return ids
        if self._int_keys:
            sort_keys: list[Array] = []
            for values in reversed(self.keys):
                sort_keys += _int_repr_order(values.values[ids], values.valid[ids])
            return ids[np.lexsort(sort_keys)]
        names = zip(self.key_names, self.keys, strict=True)
        columns = [v.series(k, ids).to_list() for k, v in names]
        reprs = [repr(t) for t in zip(*columns, strict=True)]
        order: IdArray = pl.Series(reprs, dtype=pl.String).arg_sort().to_numpy().astype(np.int64)
        return ids[order]

    # -- snapshots ---------------------------------------------------------------------------

    def live_ids(self) -> IdArray:
        """Every held row's id, ascending (ids allocated and not released since)."""
        held = np.ones(self.size, bool)
        for chunk in self._free:
            held[chunk] = False
        return np.flatnonzero(held)

    def dump(self, ids: IdArray) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Rows ``ids`` as two row-aligned frames: the key columns (their input types), and
        ``start``, ``end``, ``emitted``, ``dirty`` plus every aggregation's slot columns."""
        keys = pl.DataFrame(
            [v.dump(k, ids) for k, v in zip(self.key_names, self.keys, strict=True)]
        )
        rows = pl.DataFrame(
            [
                pl.Series("start", self.start[ids], dtype=pl.Int64),
                pl.Series("end", self.end[ids], dtype=pl.Int64),
                pl.Series("emitted", self.emitted[ids], dtype=pl.Boolean),
                pl.Series("dirty", self.dirty[ids], dtype=pl.Boolean),
                *(column for slots in self.slots for column in slots.dump(ids)),
            ]
        )
        return keys, rows

    def load(self, keys: pl.DataFrame, rows: pl.DataFrame) -> IdArray:
        """New rows from :meth:`dump`'s frames; returns their ids (in the frames' order)."""
        ids = self.allocate(rows.height)
        self.start[ids] = rows.get_column("start").to_numpy()
        self.end[ids] = rows.get_column("end").to_numpy()
        self.emitted[ids] = rows.get_column("emitted").to_numpy()
        self.dirty[ids] = rows.get_column("dirty").to_numpy()
        for name, values in zip(self.key_names, self.keys, strict=True):
            values.load(ids, keys.get_column(name))
        for slots in self.slots:
            slots.load(ids, [c for c in rows.iter_columns() if c.name.startswith(slots.prefix)])
        return ids


def _int_repr_order(values: Array, valid: Array) -> list[Array]:
    """Sort keys (least significant first) ordering integers as their ``repr`` strings do.

    In a tuple's repr an integer is followed by ``,`` or ``)``, both below every digit, so a
    shorter digit string sorts before its extensions: order by digits padded with zeros to 19
    places, then by length. ``-`` sorts before digits and ``None`` after them.
    """
    v = values.astype(np.int64)
    negative = v < 0
    magnitude = np.where(negative, -(v + 1), v).astype(np.uint64) + negative.astype(np.uint64)
    digits = np.ones(v.shape[0], np.int8)
    for power in _POW10[1:19]:
        digits += magnitude >= power
    padded = magnitude * _POW10[19 - digits.astype(np.int64)]
    group = np.where(valid, np.where(negative, 0, 1), 2).astype(np.int8)
    return [digits, padded, group]
