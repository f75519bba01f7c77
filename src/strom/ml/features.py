"""Feature views: one keyed window aggregation, run bounded for training and streaming to serve.

A :class:`FeatureView` is a definition, not data: the keys, the window, the aggregations and
the event-time column, over inputs whose columns have known types. :attr:`FeatureView.version`
is a hash of exactly that (the input columns it reads and their types included), so a model
trained on a view's features and a stream serving them can be compared by version: a changed
window, aggregation or input type is another version.

The same view is applied to a stream (:meth:`FeatureView.apply`: streaming or bounded, the
engine guarantees equal results for on-time events) and computed over history
(:meth:`FeatureView.compute`: the bounded runner). Each result row is one key's window; its
value is known once the window has closed, at ``window_end``: that is the time
:func:`strom.ml.training_set` treats it as available.

**Lineage.** Applied to a stream that still has a Kafka source's ``_topic``, ``_partition`` and
``_offset`` columns, each result row also names a record behind it in the same three columns:
the window's latest event by event time (ties: the later partition, then the later position,
as :func:`strom.agg.last` breaks them), so a prediction scored from a window says, like one
scored from a single event, which record to replay to reproduce it. These columns are not
features: they are not in :attr:`FeatureView.feature_names` nor in the version, and a view
computed over files has none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from strom.connectors.memory import MemorySink, MemorySource
from strom.engine.aggregation import Agg
from strom.engine.contracts import Source
from strom.pipeline import agg
from strom.pipeline.plan import SinkNode
from strom.pipeline.stream import AsofJoinResult, Pipeline, Stream, WindowResult
from strom.pipeline.validate import PlanError, validate
from strom.pipeline.windows import Duration, WindowSpec

__all__ = ["LINEAGE", "FeatureView"]

LINEAGE = ("_topic", "_partition", "_offset")
"""The Kafka metadata columns a view's result keeps (from the window's latest event)."""


@dataclass(frozen=True)
class FeatureView:
    """Features per ``keys`` from ``aggs`` over ``window``, on event time ``timestamp``, from
    inputs whose columns have the types of ``input_schema`` (the columns the view reads must be
    in it; others are ignored).

    >>> from strom import Tumbling, agg
    >>> view = FeatureView("card_10s", keys=("card",), window=Tumbling(10_000),
    ...                    aggs=(agg.count(), agg.sum("amount")), timestamp="ts",
    ...                    input_schema={"card": pl.String, "amount": pl.Float64, "ts": pl.Int64})
    >>> events = pl.DataFrame({"card": ["a", "a", "b"], "amount": [5.0, 7.0, 1.0],
    ...                        "ts": [1_000, 4_000, 12_000]})
    >>> view.compute_frame(events).select("card", "window_end", "count", "sum_amount").rows()
    [('a', 10000, 2, 12.0), ('b', 20000, 1, 1.0)]
    """

    name: str
    keys: tuple[str, ...]
    window: WindowSpec
    aggs: tuple[Agg, ...]
    timestamp: str
    input_schema: Mapping[str, pl.DataType | type[pl.DataType]]
    allowed_lateness_ms: int = 0

    def __post_init__(self) -> None:
        if not self.keys:
            raise PlanError(f"feature view {self.name!r}: keys=(...) names no key column")
        if not self.aggs:
            raise PlanError(f"feature view {self.name!r}: aggs=(...) names no aggregation")
        schema = self.schema
        missing = [c for c in self.columns if c not in schema]
        if missing:
            raise PlanError(
                f"feature view {self.name!r} reads columns {missing}, which input_schema "
                f"{list(schema)} does not have"
            )

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema(self.input_schema)

    @property
    def columns(self) -> list[str]:
        """The input columns the view reads: keys, event time, aggregated columns."""
        used = [*self.keys, self.timestamp, *(a.column for a in self.aggs if a.column)]
        return list(dict.fromkeys(used))

    @property
    def feature_names(self) -> list[str]:
        """The feature columns of a result row (one per aggregation)."""
        return [a.name for a in self.aggs]

    def definition(self) -> dict[str, Any]:
        """What :attr:`version` hashes: the definition and the types of the columns read."""
        schema = self.schema
        return {
            "keys": list(self.keys),
            "window": {"type": type(self.window).__name__, **dataclasses.asdict(self.window)},
            "aggs": [[type(a).__name__, *map(_plain, dataclasses.astuple(a))] for a in self.aggs],
            "timestamp": self.timestamp,
            "allowed_lateness_ms": self.allowed_lateness_ms,
            "inputs": {c: str(schema[c]) for c in self.columns},
        }

    @property
    def version(self) -> str:
        """A hash of :meth:`definition` (16 hex digits): equal definitions, equal versions."""
        text = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def apply(self, stream: Stream) -> WindowResult:
        """The view's aggregation of ``stream`` (whose columns must have the view's types, when
        known before running): ``keys``, ``window_start``, ``window_end``, the features,
        ``is_update``, and the lineage columns (:data:`LINEAGE`) if the stream has them."""
        schema = validate((SinkNode(stream.node, MemorySink()),)).schemas.get(stream.node)
        if schema is not None:
            expected = self.schema
            for column in self.columns:
                if column not in schema:
                    raise PlanError(
                        f"feature view {self.name!r}: the stream has no column {column!r} "
                        f"(columns: {list(schema)})"
                    )
                if schema[column] != expected[column]:
                    raise PlanError(
                        f"feature view {self.name!r} v{self.version}: column {column!r} is "
                        f"{schema[column]} in the stream, {expected[column]} in the definition"
                    )
        lineage: tuple[Agg, ...] = ()
        if schema is not None and all(c in schema for c in LINEAGE):
            lineage = tuple(agg.last(c, name=c) for c in LINEAGE)
        keyed = stream.key_by(*self.keys)
        return keyed.window(self.window, allowed_lateness_ms=self.allowed_lateness_ms).agg(
            *self.aggs, *lineage
        )

    def enrich(
        self, events: Stream, *, ttl: Duration | None, features: Stream | None = None
    ) -> AsofJoinResult:
        """Every event of ``events`` with the view's features of its keys as of its time: the
        view applied to ``features`` (default: to ``events`` themselves), as-of joined
        (:meth:`Stream.asof_join`) on the view's keys to the latest window that had ended by
        the event's time and is at most ``ttl`` old, else nulls. Output: the event's columns,
        ``window_end`` (when the joined value became available) and the features. The rule of
        :func:`strom.ml.training_set`, so a model scores live what it was trained on; streaming
        and bounded runs give equal rows (late events and feature rows go to the result's
        ``late_events()`` / ``late_features()``).

        >>> from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg, run_bounded
        >>> view = FeatureView("card_10s", keys=("card",), window=Tumbling(10_000),
        ...                    aggs=(agg.sum("amount"),), timestamp="ts",
        ...                    input_schema={"card": pl.String, "amount": pl.Int64, "ts": pl.Int64})
        >>> p = Pipeline()
        >>> rows = [{"card": "a", "ts": t, "amount": 5} for t in (1_000, 4_000, 12_000)]
        >>> payments = p.source(MemorySource([rows]), timestamp="ts")
        >>> view.enrich(payments, ttl=30_000).sink(out := MemorySink())
        >>> run_bounded(p)
        >>> out.to_frame().sort("ts").rows()  # card, ts, amount, window_end, sum_amount
        [('a', 1000, 5, None, None), ('a', 4000, 5, None, None), ('a', 12000, 5, 10000, 10)]
        """
        windows = self.apply(events if features is None else features)
        columns = ["window_end", *self.feature_names]
        return events.asof_join(windows, on=list(self.keys), ttl=ttl, columns=columns)

    def compute(self, source: Source, *, max_out_of_orderness_ms: int = 0) -> pl.DataFrame:
        """The view over all of ``source`` (a bounded source: files, memory, a bounded Kafka
        topic), run by the bounded runner: every window once, final."""
        from strom.bounded import run_bounded

        sink = MemorySink()
        p = Pipeline()
        stream = p.source(
            source, timestamp=self.timestamp, max_out_of_orderness_ms=max_out_of_orderness_ms
        )
        self.apply(stream).sink(sink)
        plan = p.plan()
        run_bounded(plan)
        frame = sink.to_frame()
        schema = plan.schemas.get(plan.sinks[0])
        if frame.height == 0 and schema is not None:
            return pl.DataFrame(schema=schema)
        return frame

    def compute_frame(self, events: pl.DataFrame | Sequence[pl.DataFrame]) -> pl.DataFrame:
        """:meth:`compute` over frames in memory (one source partition each)."""
        frames = [events] if isinstance(events, pl.DataFrame) else list(events)
        if not frames:
            raise ValueError(f"feature view {self.name!r}: compute_frame() of no frames")
        return self.compute(MemorySource([[f] for f in frames], schema=frames[0].schema))


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value
