"""Lookup joins (stream-to-table) in the streaming runtime: the operator with its cache.

Both executors join the same way (:func:`strom.engine.joins.join_found`): a left join on the
stream's ``on`` column against the rows a :class:`~strom.engine.contracts.LookupTable` returned,
keeping every input row once and in order; keys the table does not hold, and null keys, give nulls.
They differ only in *when* they ask the table: the bounded runner once for every distinct key of its
input, the streaming operator once per micro-batch for the keys its cache does not hold fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import polars as pl

from strom.engine.constants import LOOKUP_KEY
from strom.engine.contracts import Metrics
from strom.engine.joins import join_found, right_side, value_schema
from strom.pipeline.plan import LookupJoinNode
from strom.runtime.operators import Operator

Clock = Callable[[], float]


class LookupJoinOperator(Operator):
    """Joins each batch against its table through a per-key cache with a processing-time TTL.

    Per batch: the distinct non-null keys whose cache entry is missing or at least ``ttl_ms``
    old (by ``clock``, in ms) are looked up in **one** :meth:`LookupTable.lookup` call, and the
    answer is cached per key, including "not in the table" (so a row added to the table is seen
    once that key's entry expires). A fresh entry is never refreshed: a row changed in the table
    is seen by the first batch at least ``ttl_ms`` after the key was last fetched, not before.
    Expired entries are dropped at most once per ``ttl_ms``, so the cache holds the keys of
    about the last ``ttl_ms``. The cache is not snapshotted: after a restart it refills.
    """

    def __init__(self, name: str, node: LookupJoinNode, clock: Clock) -> None:
        super().__init__(name)
        self.node = node
        self.clock = clock
        self.queries = 0
        """How many :meth:`LookupTable.lookup` calls this operator made."""
        self.keys_fetched = 0
        self.cache_hits = 0
        self._cache: dict[Any, tuple[float, tuple[Any, ...] | None]] = {}
        self._schema: dict[str, Any] | None = None
        self._last_purge = 0.0

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        self.emit(partition, self.join(batch))

    def join(self, batch: pl.DataFrame) -> pl.DataFrame:
        """``batch`` with the table's columns added (see the class docstring for caching)."""
        node = self.node
        key_dtype = batch.schema[node.on]
        keys = batch.get_column(node.on).drop_nulls().unique(maintain_order=True)
        now = self.clock()
        self._purge(now)
        stale = [k for k in keys.to_list() if not self._fresh(k, now)]
        self.cache_hits += keys.len() - len(stale)
        if stale:
            self._fetch(pl.Series(node.on, stale, dtype=key_dtype), key_dtype, now)
        schema = self._schema or value_schema(node)
        rows = [(k, *entry[1]) for k in keys.to_list() if (entry := self._cache[k])[1] is not None]
        right = pl.DataFrame(
            rows, schema={LOOKUP_KEY: key_dtype, **schema}, orient="row", strict=False
        ).filter(pl.col(LOOKUP_KEY).is_not_null())
        return join_found(batch.lazy(), right, node.on).collect()

    def state_size(self) -> int:
        """Keys cached (a cache, not state: it is not snapshotted, and refills)."""
        return len(self._cache)

    def metrics(self) -> Metrics:
        """The counters, plus ``queries``, ``keys_fetched`` and ``cache_hits`` in ``detail``."""
        detail = {"queries": self.queries, "keys_fetched": self.keys_fetched,
                  "cache_hits": self.cache_hits}  # fmt: skip
        return replace(super().metrics(), detail=detail)

    def _fresh(self, key: Any, now: float) -> bool:
        entry = self._cache.get(key)
        return entry is not None and now - entry[0] < self.node.ttl_ms

    def _fetch(self, keys: pl.Series, key_dtype: pl.DataType, now: float) -> None:
        node = self.node
        found = node.table.lookup(keys)
        self.queries += 1
        self.keys_fetched += keys.len()
        if self._schema is None:
            self._schema = value_schema(node, found)
        right = right_side(node, found, key_dtype, self._schema)
        for key in keys.to_list():
            self._cache[key] = (now, None)
        for row in right.iter_rows():
            self._cache[row[0]] = (now, tuple(row[1:]))

    def _purge(self, now: float) -> None:
        ttl = self.node.ttl_ms
        if now - self._last_purge < ttl:
            return
        self._last_purge = now
        self._cache = {k: e for k, e in self._cache.items() if now - e[0] < ttl}
