"""The user-facing builder: :class:`Pipeline` and the stream types whose methods add plan nodes.

Every method returns a new stream and never mutates one, so a stream can feed several branches.
Nothing runs here: hand the pipeline to an executor (``strom.runtime`` or ``strom.bounded``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import polars as pl

from strom.engine.aggregation import Agg
from strom.engine.aggregations import Aggregation
from strom.engine.constants import GLOBAL_KEY, IS_UPDATE
from strom.engine.contracts import LookupTable, Sink, Source
from strom.engine.scoring import ModelProvider
from strom.pipeline.plan import (
    JOIN_HOWS,
    AsofJoinNode,
    DistinctNode,
    EmitMode,
    FilterNode,
    IntervalJoinLateNode,
    IntervalJoinNode,
    JoinHow,
    JoinNode,
    KeyByNode,
    KeyedAggNode,
    LateNode,
    LookupJoinNode,
    MapBatchesNode,
    MapNode,
    Plan,
    PlanNode,
    PredictNode,
    ProcessNode,
    SelectNode,
    SinkNode,
    SortNode,
    SourceNode,
    UnionNode,
    WindowAggNode,
    WithColumnsNode,
)
from strom.pipeline.process import FlatMapFn, MapFn, Ordering, ProcessFunction
from strom.pipeline.validate import PlanError, validate
from strom.pipeline.windows import Duration, WindowSpec, to_ms

SchemaLike = pl.Schema | Mapping[str, pl.DataType | type[pl.DataType]]


class Pipeline:
    """A set of dataflows from sources to sinks; :meth:`plan` validates and freezes it."""

    def __init__(self) -> None:
        self._sinks: list[SinkNode] = []
        self._source_names: set[str] = set()

    def source(
        self,
        source: Source,
        *,
        timestamp: str | None = None,
        max_out_of_orderness_ms: Duration = 0,
        idle_timeout_ms: Duration | None = None,
        name: str | None = None,
    ) -> Stream:
        """A stream reading ``source``.

        ``timestamp`` names the event-time column (integer epoch milliseconds or Datetime);
        each partition's watermark trails the largest event time it has seen by
        ``max_out_of_orderness_ms``. A partition that delivers nothing for ``idle_timeout_ms``
        of processing time stops holding the combined watermark back until it delivers again.
        Spans are integer milliseconds or :class:`datetime.timedelta`.
        """
        name = name or f"source{len(self._source_names)}"
        if name in self._source_names:
            raise PlanError(f"two sources are named {name!r}; names must be unique")
        self._source_names.add(name)
        bound = _ms(max_out_of_orderness_ms, "max_out_of_orderness_ms")
        idle = _optional_ms(idle_timeout_ms, "idle_timeout_ms")
        node = SourceNode(source, timestamp, bound, idle, name)
        return Stream(self, node)

    def _add_sink(self, node: SinkNode) -> None:
        self._sinks.append(node)

    def plan(self) -> Plan:
        """Validate every dataflow that ends in a sink; raises :class:`PlanError` if invalid."""
        return validate(tuple(self._sinks))


class Stream:
    """A stream of event batches; methods add transformations to the plan."""

    def __init__(self, pipeline: Pipeline, node: PlanNode) -> None:
        self._pipeline = pipeline
        self._node = node

    @property
    def node(self) -> PlanNode:
        """The plan node producing this stream."""
        return self._node

    def _then(self, node: PlanNode) -> Stream:
        return Stream(self._pipeline, node)

    def filter(self, predicate: pl.Expr) -> Stream:
        """Keep rows where the Boolean ``predicate`` is true (null counts as false)."""
        return self._then(FilterNode(self._node, predicate))

    def with_columns(self, *exprs: pl.Expr, **named: pl.Expr) -> Stream:
        """Add or replace columns, as ``polars.DataFrame.with_columns``."""
        all_exprs = (*exprs, *(e.alias(n) for n, e in named.items()))
        return self._then(WithColumnsNode(self._node, all_exprs))

    def select(self, *exprs: pl.Expr | str, **named: pl.Expr) -> Stream:
        """Project to these columns/expressions, as ``polars.DataFrame.select``."""
        all_exprs = (
            *(pl.col(e) if isinstance(e, str) else e for e in exprs),
            *(e.alias(n) for n, e in named.items()),
        )
        return self._then(SelectNode(self._node, all_exprs))

    def map_batches(
        self, fn: Callable[[pl.DataFrame], pl.DataFrame], *, schema: pl.Schema | None = None
    ) -> Stream:
        """Apply ``fn`` to whole batches. ``fn`` must not depend on batch boundaries; declare
        its output ``schema`` to keep validating the steps after it."""
        return self._then(MapBatchesNode(self._node, fn, schema))

    def map(self, fn: MapFn, *, output_schema: SchemaLike) -> Stream:
        """Apply ``fn`` to every row (a dict) to get one output row (slow path: per-record
        Python). Output columns follow ``output_schema``; keys missing from a row are null."""
        return self._then(MapNode(self._node, fn, _schema(output_schema, "map"), flat=False))

    def flat_map(self, fn: FlatMapFn, *, output_schema: SchemaLike) -> Stream:
        """Apply ``fn`` to every row (a dict) to get zero or more output rows (slow path).
        Output rows keep the input order; columns follow ``output_schema``."""
        return self._then(MapNode(self._node, fn, _schema(output_schema, "flat_map"), flat=True))

    def union(self, *others: Stream) -> Stream:
        """All rows of this stream and ``others`` (same schema and event-time column)."""
        for other in others:
            if other._pipeline is not self._pipeline:
                raise PlanError("union() of streams from different pipelines")
        return self._then(UnionNode((self._node, *(o._node for o in others))))

    def lookup_join(
        self,
        table: LookupTable,
        *,
        on: str,
        columns: Sequence[str] | None = None,
        ttl_ms: Duration = 60_000,
    ) -> Stream:
        """Enrich every row with ``columns`` of ``table``'s row whose key equals the row's ``on``.

        A left join: every input row is kept once, in order; a key missing from the table (or
        a null ``on``) gives nulls in ``columns``. ``columns`` defaults to every table column
        but the key (then the table's schema must be readable now). The streaming executor
        looks up the distinct keys of each micro-batch in one request and caches the answer,
        found or missing, for ``ttl_ms`` of processing time (``0``: no cache), so a changed
        table row is seen at most ``ttl_ms`` after it changed. The bounded runner looks up all
        distinct keys once. Event time passes through unchanged.
        """
        if not isinstance(table, LookupTable):
            raise PlanError(f"lookup_join() takes a LookupTable (e.g. SQLiteTable), got {table!r}")
        if columns is None:
            schema = table.schema()
            if schema is None:
                raise PlanError(
                    "lookup_join(): the table's schema is not readable yet; pass columns=[...]"
                )
            columns = [c for c in schema if c != table.key]
        if isinstance(columns, str):
            columns = [columns]
        return self._then(
            LookupJoinNode(self._node, table, on, tuple(columns), _ms(ttl_ms, "ttl_ms"))
        )

    def interval_join(
        self,
        right: Stream,
        *,
        on: str | Sequence[str] | None = None,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        lower_ms: Duration | None,
        upper_ms: Duration | None,
        suffix: str = "_right",
    ) -> IntervalJoinResult:
        """Inner join with ``right``: rows with equal keys (``on``, or ``left_on``/``right_on``;
        null keys never match) and ``left.ts + lower_ms <= right.ts <= left.ts + upper_ms``.

        ``None`` leaves that side unbounded; ``(None, None)`` is a plain inner join whose state
        is never purged. Both streams need event time. Output: every left column, then the right
        columns (a right key named like its left key is dropped; a name already taken gets
        ``suffix``), then ``join_time = max(left ts, right ts)`` (Int64 ms), the output's event
        time, so windows can follow. The streaming runtime keeps each side's rows until the
        watermark (the minimum of both inputs') rules out further matches; a row arriving behind
        that watermark, whose partners may be gone, goes to :meth:`IntervalJoinResult.late_left`
        or :meth:`~IntervalJoinResult.late_right` instead of joining (a row behind it whose
        partners are all kept, because the other side is unbounded, still joins). The bounded
        runner finds every match and no late rows, so the two agree whenever nothing is late.
        """
        if not isinstance(right, Stream):
            raise PlanError(f"interval_join() takes another Stream, got {right!r}")
        if right._pipeline is not self._pipeline:
            raise PlanError("interval_join() of streams from different pipelines")
        lkeys, rkeys = _join_keys("interval_join", on, left_on, right_on)
        lower, upper = _optional_ms(lower_ms, "lower_ms"), _optional_ms(upper_ms, "upper_ms")
        node = IntervalJoinNode(self._node, right._node, lkeys, rkeys, lower, upper, suffix)
        return IntervalJoinResult(self._pipeline, node)

    def asof_join(
        self,
        features: Stream,
        *,
        on: str | Sequence[str] | None = None,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        ttl: Duration | None,
        columns: Sequence[str] | None = None,
        suffix: str = "_right",
    ) -> AsofJoinResult:
        """Join every event to the latest row of ``features`` with equal keys (``on``, or
        ``left_on``/``right_on``) that was available at the event's time, not older than
        ``ttl`` (``None``: no limit); nulls if there is none (a left join, every event once).

        A feature row is available from its stream's event time (a window's ``window_end``:
        it ends, then it is known), so the row joined is the one with the largest event time
        ``<= `` the event's: no feature made of later events, the point-in-time rule of
        ``strom.ml.training_set``. Output: every event column, then ``columns`` of the
        features (default: all but the keys; a name already taken gets ``suffix``). Event
        time: the events'. Of feature rows with equal keys and time, the last to arrive counts
        (bounded: the last in partition order).

        The streaming runtime holds each event until the watermark passes its time, then joins
        it to the final rows (see ``strom.runtime.asof_join``): the result equals the bounded
        runner's over the rows that are not late. Rows behind the join's watermark on arrival
        are late and not joined: events go to :meth:`AsofJoinResult.late_events`, feature rows
        (a window's ``is_update`` re-emissions after allowed lateness) to
        :meth:`AsofJoinResult.late_features`; the bounded runner has none.
        """
        if not isinstance(features, Stream):
            raise PlanError(f"asof_join() takes another Stream, got {features!r}")
        if features._pipeline is not self._pipeline:
            raise PlanError("asof_join() of streams from different pipelines")
        lkeys, rkeys = _join_keys("asof_join", on, left_on, right_on)
        kept = None if columns is None else _names(columns)
        ttl_ms = _optional_ms(ttl, "ttl")
        node = AsofJoinNode(self._node, features._node, lkeys, rkeys, ttl_ms, kept, suffix)
        return AsofJoinResult(self._pipeline, node)

    def join(
        self,
        other: Stream,
        *,
        on: str | Sequence[str] | None = None,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        how: JoinHow = "inner",
        suffix: str = "_right",
        ttl_ms: Duration | None = None,
    ) -> Stream:
        """Equi-join with ``other`` on equal keys (``on``, or ``left_on``/``right_on``; null
        keys never match).

        ``how="inner"``: every matching pair; ``"left"``: also each left row without a match
        (right columns null); ``"semi"``: each left row that has a match, once; ``"anti"``:
        each left row without one. Output: every left column, then (inner, left) the right
        columns, a right key named like its left key dropped and a name already taken
        getting ``suffix``. Event time is the left input's. Row order is not promised (sort
        after the join where it matters).

        Bounded runs hash-join both whole inputs (``ttl_ms`` is ignored). The streaming
        runtime needs ``ttl_ms`` (otherwise its state would grow without bound; it refuses
        the plan, naming :meth:`interval_join` and :meth:`lookup_join`): each row is held for
        ``ttl_ms`` of processing time after it arrived, and two rows meet if the second
        arrives while the first is held. Every output row is final (nothing is retracted):
        pairs and semi-join rows are emitted with the batch that completes them; a left row
        that found no partner (``left``, ``anti``) when it leaves the state (its TTL passed,
        or every input ended), and at once if its key is null. So when no row outlives its TTL
        before the input ends, the streaming result is the bounded one (in another order).
        """
        if not isinstance(other, Stream):
            raise PlanError(f"join() takes another Stream, got {other!r}")
        if other._pipeline is not self._pipeline:
            raise PlanError("join() of streams from different pipelines")
        if how not in JOIN_HOWS:
            raise PlanError(f"join(): how must be one of {list(JOIN_HOWS)}, not {how!r}")
        lkeys, rkeys = _join_keys("join", on, left_on, right_on)
        ttl = _optional_ms(ttl_ms, "ttl_ms")
        return self._then(JoinNode(self._node, other._node, lkeys, rkeys, how, suffix, ttl))

    def sort(
        self,
        by: str | Sequence[str],
        *,
        descending: bool | Sequence[bool] = False,
        nulls_last: bool = False,
    ) -> Stream:
        """All rows ordered by ``by`` (``descending`` for all columns or per column; nulls
        first unless ``nulls_last``); rows with equal keys keep their input order (partitions
        in order, then position). Bounded runs only: a stream never ends, so it has no order."""
        columns = _names(by)
        return self._then(
            SortNode(self._node, columns, _flags(descending, len(columns)), nulls_last)
        )

    def top_k(
        self,
        k: int,
        *,
        by: str | Sequence[str],
        descending: bool | Sequence[bool] = True,
        nulls_last: bool = True,
    ) -> Stream:
        """The first ``k`` rows in the order of :meth:`sort` (by default the ``k`` largest,
        nulls last), in that order; ties keep input order. Bounded runs only."""
        columns = _names(by)
        flags = _flags(descending, len(columns))
        return self._then(SortNode(self._node, columns, flags, nulls_last, k))

    def distinct(self, *columns: str) -> Stream:
        """The first row (in input order) of each distinct value of ``columns`` (of whole rows
        if none are named), in input order; nulls compare equal. Bounded runs only."""
        return self._then(DistinctNode(self._node, tuple(columns)))

    def agg(self, *aggs: Agg) -> Stream:
        """Aggregate the whole stream, without a key or a window: one row, the aggregations
        (named as for :meth:`KeyedStream.agg`) and ``is_update``.

        It is :meth:`KeyedStream.agg` over one constant key, so it runs wherever that runs: a
        bounded run gives the one row of the whole input; the streaming runtime emits the new
        value after every micro-batch (an updating table of one row). Unlike SQL's aggregate
        without ``GROUP BY``, an empty input gives no row (not a row of zero counts and nulls).

        >>> from strom import MemorySink, MemorySource, Pipeline, agg, run_bounded
        >>> p = Pipeline()
        >>> rows = [{"x": 1}, {"x": 2}, {"x": 4}]
        >>> p.source(MemorySource([rows])).agg(agg.sum("x"), agg.max("x")).sink(t := MemorySink())
        >>> run_bounded(p)
        >>> t.to_frame().rows()  # sum_x, max_x, is_update
        [(7, 4, False)]
        """
        checked = _aggregations(aggs)
        one = self.with_columns(pl.lit(True).alias(GLOBAL_KEY)).key_by(GLOBAL_KEY)
        return one.agg(*checked).select(*(a.name for a in checked), IS_UPDATE)

    def predict(
        self,
        models: ModelProvider,
        model: str,
        *,
        output: str = "score",
        ref: str | int = "production",
        feature_version: str | None = None,
        dead_letter: Sink | None = None,
    ) -> Stream:
        """Score every row with ``model`` from ``models`` (a ``strom.ml.ModelStore``), as
        ``ref`` names it: an alias (default ``"production"``), ``"latest"`` or a version.

        Adds ``output`` (Float64), ``model_name``, ``model_version`` and ``feature_version``
        (default: the one the model was trained on) to every row; the other columns pass
        through, so a ``KafkaSource``'s ``_topic``/``_partition``/``_offset`` name the event
        behind each score. Building the plan loads and verifies the model: a missing or
        mistyped feature column, or a model that cannot be trusted or read, is a
        :class:`PlanError` naming it. The model is called once per micro-batch; a batch it
        raises on goes to ``dead_letter`` (rows of ``DEAD_LETTER_SCHEMA``, the reason naming
        the model version and the error) and the pipeline goes on. A promotion reaches a
        running pipeline between two batches, or, once the run takes checkpoints, at the next
        checkpoint: no batch is scored by two versions (see ``strom.runtime.predict``).
        """
        node = PredictNode(self._node, models, model, ref, output, feature_version, dead_letter)
        return self._then(node)

    def key_by(self, *keys: str) -> KeyedStream:
        """Partition state by these columns for the window, aggregation (:meth:`KeyedStream.agg`)
        or process function that follows (also after a window: results carry event time
        ``window_end``)."""
        return KeyedStream(self._pipeline, KeyByNode(self._node, tuple(keys)), tuple(keys))

    def window(
        self, spec: WindowSpec, *, allowed_lateness_ms: Duration = 0, emit: EmitMode = "final"
    ) -> WindowedStream:
        """Global (unkeyed) windows over the whole stream; see :meth:`KeyedStream.window`."""
        return WindowedStream(self._pipeline, self._node, (), spec, allowed_lateness_ms, emit)

    def sink(self, sink: Sink) -> None:
        """Send this stream's batches to ``sink``."""
        self._pipeline._add_sink(SinkNode(self._node, sink))


class KeyedStream(Stream):
    """A stream whose windows, aggregations and state are kept per key."""

    def __init__(self, pipeline: Pipeline, node: PlanNode, keys: tuple[str, ...]) -> None:
        super().__init__(pipeline, node)
        self.keys = keys

    def window(
        self, spec: WindowSpec, *, allowed_lateness_ms: Duration = 0, emit: EmitMode = "final"
    ) -> WindowedStream:
        """Per-key windows by event time.

        With ``emit="final"`` each window emits once when the watermark passes its end. A late
        event up to ``allowed_lateness_ms`` after that updates the window and re-emits it with
        ``is_update=True``; later events go to :meth:`WindowResult.late`. With
        ``emit="update"`` a window also emits its running value after every batch that changes
        it; the last row emitted for a window is always its final value.
        """
        return WindowedStream(
            self._pipeline, self._node, self.keys, spec, allowed_lateness_ms, emit
        )

    def process(
        self,
        fn: ProcessFunction,
        *,
        output_schema: SchemaLike,
        ordering: Ordering = "event_time",
    ) -> Stream:
        """Run ``fn`` (a :class:`~strom.pipeline.ProcessFunction`) per key with state and timers.

        The slow path (per-record Python). ``ordering="event_time"`` processes each element once
        the watermark has passed it, in event-time order per key, so streaming and bounded runs
        agree; ``"arrival"`` processes each batch immediately (sorted within the batch). See
        :mod:`strom.pipeline.process` for the guarantees.
        """
        if not isinstance(fn, ProcessFunction):
            raise PlanError(f"process() takes a strom.pipeline.ProcessFunction, got {fn!r}")
        if ordering not in ("event_time", "arrival"):
            raise PlanError(f"ordering must be 'event_time' or 'arrival', not {ordering!r}")
        schema = _schema(output_schema, "process")
        return self._then(ProcessNode(self._node, self.keys, fn, schema, ordering))

    def agg(self, *aggs: Agg) -> Stream:
        """Aggregate per key over all time (no window): an updating table.

        Results: the key columns, one column per aggregation (named as for windows),
        ``is_update``. A bounded run gives one row per key, ordered by key. The streaming
        runtime emits, after every micro-batch, the new value of each key the batch changed
        (``is_update=True`` once the key has been emitted before): an upsert sink keyed by the
        key columns (``SQLiteSink(..., mode="upsert", key=[...])``) holds the latest value,
        which equals the bounded result. ``first``/``last`` order by event time when the
        stream has one (ties: source partition, then position), else by arrival. The results
        have no event time. State: one row per key, kept for the whole run (snapshotted with
        every checkpoint).

        >>> from strom import MemorySink, MemorySource, Pipeline, agg, run_bounded
        >>> p = Pipeline()
        >>> rows = [{"user": "a", "x": 1}, {"user": "b", "x": 2}, {"user": "a", "x": 3}]
        >>> p.source(MemorySource([rows])).key_by("user").agg(agg.sum("x")).sink(t := MemorySink())
        >>> run_bounded(p)
        >>> t.to_frame().rows()  # key, sum_x, is_update
        [('a', 4, False), ('b', 2, False)]
        """
        return self._then(KeyedAggNode(self._node, self.keys, _aggregations(aggs)))


class WindowedStream:
    """A windowed stream awaiting its aggregations."""

    def __init__(
        self,
        pipeline: Pipeline,
        node: PlanNode,
        keys: tuple[str, ...],
        spec: WindowSpec,
        allowed_lateness_ms: Duration,
        emit: EmitMode,
    ) -> None:
        self._pipeline = pipeline
        self._node = node
        self._keys = keys
        self._spec = spec
        self._lateness = _ms(allowed_lateness_ms, "allowed_lateness_ms")
        self._emit = emit

    def agg(self, *aggs: Agg) -> WindowResult:
        """Results: key columns, ``window_start``, ``window_end``, one column per aggregation
        (named by the aggregation: ``agg.mean("t")`` is ``mean_t``, ``agg.mean("t",
        name="avg")`` or ``agg.mean("t").alias("avg")`` is ``avg``), ``is_update``."""
        node = WindowAggNode(
            self._node, self._keys, self._spec, _aggregations(aggs), self._lateness, self._emit
        )
        return WindowResult(self._pipeline, node)


class WindowResult(Stream):
    """Window results; :meth:`late` is the side output of events too late to count.

    Their event time is ``window_end``, so they can be re-keyed and windowed or processed again.
    """

    def late(self) -> Stream:
        """Events later than the allowed lateness: the input row plus the ``window_start`` and
        ``window_end`` it missed (one row per missed window). Never dropped silently."""
        return self._then(LateNode(self._node))


class IntervalJoinResult(Stream):
    """Interval-join results; :meth:`late_left`/:meth:`late_right` are the rows that arrived
    too late to be joined (streaming runtime only; the bounded runner has none)."""

    def late_left(self) -> Stream:
        """Left rows that arrived behind the join's watermark while ``lower_ms`` is bounded,
        unchanged. Never dropped silently."""
        return self._then(IntervalJoinLateNode(self._node, "left"))

    def late_right(self) -> Stream:
        """Right rows that arrived behind the join's watermark while ``upper_ms`` is bounded,
        unchanged. Never dropped silently."""
        return self._then(IntervalJoinLateNode(self._node, "right"))


def _names(columns: str | Sequence[str]) -> tuple[str, ...]:
    return (columns,) if isinstance(columns, str) else tuple(columns)


def _aggregations(aggs: tuple[Agg, ...]) -> tuple[Aggregation, ...]:
    checked: list[Aggregation] = []
    for a in aggs:
        if not isinstance(a, Aggregation):
            raise PlanError(f"agg() takes strom.pipeline.agg aggregations, got {a!r}")
        checked.append(a)
    return tuple(checked)


def _join_keys(
    method: str,
    on: str | Sequence[str] | None,
    left_on: str | Sequence[str] | None,
    right_on: str | Sequence[str] | None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if on is not None and (left_on is not None or right_on is not None):
        raise PlanError(f"{method}(): pass on=, or left_on= and right_on=, not both")
    if on is not None:
        left_on = right_on = on
    if left_on is None or right_on is None:
        raise PlanError(f"{method}(): pass on= or both left_on= and right_on=")
    lkeys, rkeys = _names(left_on), _names(right_on)
    if not lkeys or len(lkeys) != len(rkeys):
        raise PlanError(
            f"{method}(): left_on {list(lkeys)} and right_on {list(rkeys)} must name "
            "the same number (at least one) of key columns"
        )
    return lkeys, rkeys


def _flags(descending: bool | Sequence[bool], count: int) -> tuple[bool, ...]:
    if isinstance(descending, bool):
        return (descending,) * count
    return tuple(bool(d) for d in descending)


def _schema(schema: SchemaLike, method: str) -> pl.Schema:
    try:
        return schema if isinstance(schema, pl.Schema) else pl.Schema(schema)
    except (TypeError, ValueError) as exc:
        raise PlanError(
            f"{method}(): output_schema must map column names to types ({exc})"
        ) from exc


def _ms(value: Duration, name: str) -> int:
    """:func:`~strom.pipeline.windows.to_ms`, failing as a :class:`PlanError`."""
    try:
        return to_ms(value, name)
    except (TypeError, ValueError) as exc:
        raise PlanError(str(exc)) from None


def _optional_ms(value: Duration | None, name: str) -> int | None:
    return None if value is None else _ms(value, name)


class AsofJoinResult(Stream):
    """As-of join results; :meth:`late_events`/:meth:`late_features` are the rows that arrived
    too late to be joined (streaming runtime only; the bounded runner has none)."""

    def late_events(self) -> Stream:
        """Events that arrived behind the join's watermark, unchanged. Never dropped silently."""
        return self._then(IntervalJoinLateNode(self._node, "left"))

    def late_features(self) -> Stream:
        """Feature rows that arrived behind the join's watermark, unchanged (not joined)."""
        return self._then(IntervalJoinLateNode(self._node, "right"))
