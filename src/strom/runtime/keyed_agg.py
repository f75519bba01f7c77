"""Keyed aggregation without a window in the streaming runtime: an updating table.

State is columnar (:class:`~strom.runtime.windows.state.WindowState`, one row per key, the
window columns unused) plus a dict from key (a value, or a tuple of values for several key
columns) to row id. Per batch, rows are pre-aggregated by Polars into one partial per key
(:meth:`~strom.engine.aggregation.Agg.partial_exprs`), merged into the keys' rows with NumPy,
and the new value of every key the batch touched is emitted at once, in the batch's group
order, ``is_update=True`` for a key emitted before. Keys are never purged, so after the last
batch the latest row of each key is :func:`strom.engine.relational.keyed_agg_frames`'s row:
the same accumulator rules, and ``first``/``last`` order by the same key (event time, else 0;
then partition and position). Watermarks pass through untouched; the results have no event
time of their own.
"""

from __future__ import annotations

import dataclasses
from itertools import compress, repeat
from typing import Any

import numpy as np
import polars as pl

from strom.engine.constants import PART, SEQ, TS
from strom.engine.contracts import OperatorState
from strom.engine.keys import row_keys
from strom.engine.relational import needs_positions, order_time
from strom.engine.schemas import keyed_agg_schema
from strom.pipeline.plan import KeyedAggNode
from strom.runtime.operators import Operator
from strom.runtime.snapshots import check_definition, seq_from_meta, seq_to_meta
from strom.runtime.windows.accumulators import Accumulators
from strom.runtime.windows.slots import IdArray
from strom.runtime.windows.state import WindowState

KIND = "keyed_agg"


class KeyedAggOperator(Operator):
    """The updating table of one :class:`~strom.pipeline.plan.KeyedAggNode`."""

    def __init__(self, name: str, node: KeyedAggNode, ts_column: str | None) -> None:
        super().__init__(name)
        self.node = node
        self.keys = node.keys
        self.ts_column = ts_column
        self.acc = Accumulators(node.aggs)
        self._partial_exprs = self.acc.partial_exprs()
        self._positions = needs_positions(node.aggs)
        self.index: dict[Any, int] = {}
        self.state: WindowState | None = None
        self._input_schema: pl.Schema | None = None
        self._seq: dict[int, int] = {}

    def _set_input_schema(self, schema: pl.Schema | None) -> None:
        self._input_schema = schema
        self.state = None
        if schema is not None:
            out = keyed_agg_schema(self.keys, self.node.aggs, schema)
            self.state = WindowState.for_batches(
                self.keys, self.node.aggs, schema, self._partial_exprs, out
            )

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        if batch.height == 0:
            return
        if self._input_schema is None:
            self._set_input_schema(batch.schema)
        if self._positions:
            start = self._seq.get(partition, 0)
            self._seq[partition] = start + batch.height
            batch = batch.with_columns(
                order_time(self.ts_column, batch.schema).alias(TS),
                (pl.int_range(pl.len(), dtype=pl.Int64) + start).alias(SEQ),
                pl.lit(partition, dtype=pl.Int64).alias(PART),
            )
            if self.acc.needs_order:
                batch = batch.sort(TS, SEQ)
        partials = batch.group_by(list(self.keys), maintain_order=True).agg(
            self.acc.batch_exprs(batch)
        )
        ids = self._merge(partition, partials)
        assert self.state is not None
        self.emit(partition, self.state.results(ids, None, window_columns=False))

    def _merge(self, partition: int, partials: pl.DataFrame) -> IdArray:
        """Fold each partial row into its key's row (new keys get rows); returns the row ids,
        one per partial row (unique: partials are grouped by key)."""
        state = self.state
        assert state is not None
        parts = state.read(partials)
        keys = row_keys(partials, self.keys)
        count = partials.height
        found = np.fromiter(map(self.index.get, keys, repeat(-1)), np.int64, count=count)
        new = found < 0
        pos = np.arange(count)
        fresh = int(new.sum())
        if fresh:
            new_ids = state.allocate(fresh)
            found[new] = new_ids
            new_keys = keys if fresh == count else list(compress(keys, new.tolist()))
            self.index.update(zip(new_keys, new_ids.tolist(), strict=True))
            state.put(new_ids, 0, partials, parts, pos[new], partition)
        if fresh < count:
            old = ~new
            state.merge(found[old], parts, pos[old], partition)
        return found

    def state_size(self) -> int:
        """Keys held."""
        return len(self.index)

    def definition(self) -> dict[str, Any]:
        """What a state of this operator depends on (a state of another definition is refused)."""
        return {
            "keys": list(self.keys),
            # each aggregation whole (kind, column, name, parameters), as windows record it
            "aggs": [
                [type(a).__name__, *map(_plain, dataclasses.astuple(a))] for a in self.node.aggs
            ],
            "timestamp": self.ts_column,
        }

    def snapshot(self) -> OperatorState:
        """``keyed_agg`` state: frames ``keys`` and ``rows`` (one row per key, in the order
        keys arrived; see :meth:`WindowState.dump`), ``input`` (the input schema, empty), and
        the per-partition position counters."""
        frames: dict[str, pl.DataFrame] = {}
        if self.state is not None and self._input_schema is not None:
            ids = np.fromiter(self.index.values(), np.int64, count=len(self.index))
            frames["keys"], frames["rows"] = self.state.dump(ids)
            frames["input"] = pl.DataFrame(schema=self._input_schema)
        meta = {"definition": self.definition(), "seq": seq_to_meta(self._seq)}
        return OperatorState(KIND, 1, frames, meta)

    def restore(self, state: OperatorState) -> None:
        """Replace everything with a :meth:`snapshot` (:class:`StateError` if it is not one of
        an operator defined like this one)."""
        state.check(KIND, 1, self.name)
        check_definition(state, self.definition(), self.name)
        input_frame = state.frames.get("input")
        self._set_input_schema(None if input_frame is None else input_frame.schema)
        self._seq = seq_from_meta(state.meta["seq"])
        self.index = {}
        if self.state is not None:
            keys = state.frame("keys")
            ids = self.state.load(keys, state.frame("rows"))
            self.index = dict(zip(row_keys(keys, self.keys), ids.tolist(), strict=True))


def _plain(value: object) -> object:
    """A JSON-comparable form of an aggregation parameter (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value
