"""The bounded runner: the same plan, run to completion over bounded sources.

Every source partition is scanned whole (lazily, so Polars parallelizes file reads and
expressions); windows are computed as one vectorized group-by, as if the watermark jumped from
its minimum to ``+inf`` after the last event. So no event is late: the late output is empty,
every result has ``is_update=False``, and each window appears once.

Interval joins are one Polars join of both whole inputs, then the time filter: every match,
no late rows (their late outputs are empty), so they equal a streaming run with nothing late.

Lookup joins ask their table once, for every distinct key of their whole input (the table as
it is at that moment), and left-join each partition to the answer.

Keyed process functions (the slow path) get every event in (event time, partition, position)
order, then every timer at watermark +inf; see :mod:`strom.pipeline.process` for when that
equals a streaming run. ``map``/``flat_map`` run per row over each whole partition.

Results equal the streaming runtime's latest results over the same on-time events: the same
window assignment functions, the same aggregation semantics, the same first/last tie-breaking
(event time, then source partition, then position in that partition). Floating-point ``sum`` and
``mean`` may differ in the last bits because addition order differs.
"""

from __future__ import annotations

import polars as pl

from strom.engine.contracts import BoundedSource
from strom.pipeline.agg import Agg
from strom.pipeline.plan import (
    FilterNode,
    IntervalJoinLateNode,
    IntervalJoinNode,
    KeyByNode,
    LateNode,
    LookupJoinNode,
    MapBatchesNode,
    MapNode,
    Node,
    Plan,
    ProcessNode,
    SelectNode,
    SinkNode,
    SourceNode,
    UnionNode,
    WindowAggNode,
    WithColumnsNode,
)
from strom.pipeline.stream import Pipeline
from strom.pipeline.validate import PlanError
from strom.pipeline.windows import Session, assign_windows_lazy, event_time_ms
from strom.runtime import sketches
from strom.runtime.accumulators import PART, SEQ, TS, output_schema
from strom.runtime.interval_join import LEFT_TS, RIGHT_TS, join_frames
from strom.runtime.keyed_process import KeyedProcessCore
from strom.runtime.lookup import join_found, right_side, value_schema
from strom.runtime.operators import apply_transform, rows_to_frame
from strom.runtime.sessions import MINI, cut_sessions

Partitions = list[tuple[int, pl.LazyFrame]]


def run_bounded(pipeline: Pipeline | Plan) -> None:
    """Run every dataflow to completion, writing each sink's result as one batch."""
    plan = pipeline.plan() if isinstance(pipeline, Pipeline) else pipeline
    BoundedRunner(plan).run()


class BoundedRunner:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._memo: dict[Node, Partitions] = {}
        self._first_partition: dict[SourceNode, int] = {}
        offset = 0
        for source in plan.sources():
            self._first_partition[source] = offset
            offset += source.source.partition_count()

    def run(self) -> None:
        for sink_node in self.plan.sinks:
            frames = [lf for _, lf in self._evaluate(sink_node.input)]
            result = pl.concat(pl.collect_all(frames), how="vertical") if frames else None
            sink = sink_node.sink
            sink.open()
            try:
                if result is not None and result.height:
                    sink.write(result)
            finally:
                sink.close()

    def _evaluate(self, node: Node) -> Partitions:
        if node not in self._memo:
            self._memo[node] = self._compute(node)
        return self._memo[node]

    def _compute(self, node: Node) -> Partitions:
        if isinstance(node, SourceNode):
            source = node.source
            if not isinstance(source, BoundedSource):
                raise PlanError(
                    f"source {node.name!r} ({type(source).__name__}) is not bounded; "
                    "run it with strom.runtime instead"
                )
            first = self._first_partition[node]
            return [(first + i, source.scan_partition(i)) for i in range(source.partition_count())]
        if isinstance(node, FilterNode | WithColumnsNode | SelectNode):
            return [(p, _lazy_transform(node, lf)) for p, lf in self._evaluate(node.input)]
        if isinstance(node, ProcessNode):
            return [(-1, self._process(node).lazy())]
        if isinstance(node, MapBatchesNode | MapNode):
            return [
                (p, apply_transform(node, lf.collect()).lazy())
                for p, lf in self._evaluate(node.input)
            ]
        if isinstance(node, LookupJoinNode):
            return self._lookup_join(node)
        if isinstance(node, IntervalJoinNode):
            return [(-1, self._interval_join(node))]
        if isinstance(node, IntervalJoinLateNode):
            side = node.input.inputs[0 if node.side == "left" else 1]
            schema = pl.concat([lf for _, lf in self._evaluate(side)]).collect_schema()
            return [(-1, pl.LazyFrame(schema=schema))]
        if isinstance(node, KeyByNode | SinkNode):
            return self._evaluate(node.input)
        if isinstance(node, UnionNode):
            return [part for branch in node.branches for part in self._evaluate(branch)]
        if isinstance(node, WindowAggNode):
            return [(-1, self._window(node).lazy())]
        if isinstance(node, LateNode):
            window = node.input
            assert isinstance(window, WindowAggNode)
            schema = self._input_schema(window)
            late = {**schema, "window_start": pl.Int64(), "window_end": pl.Int64()}
            return [(-1, pl.LazyFrame(schema=late))]
        raise TypeError(f"the bounded runner cannot run {node.label} nodes yet")

    def _lookup_join(self, node: LookupJoinNode) -> Partitions:
        """One lookup for every distinct key of the whole input, joined to each partition."""
        parts = self._evaluate(node.input)
        if not parts:
            return parts
        keys_lf = pl.concat([lf.select(node.on) for _, lf in parts], how="vertical")
        keys = keys_lf.drop_nulls().unique(maintain_order=True).collect().get_column(node.on)
        key_dtype = keys.dtype
        found = node.table.lookup(keys) if keys.len() else None
        schema = value_schema(node, found)
        if found is None:
            found = pl.DataFrame(schema={node.table.key: key_dtype, **schema})
        right = right_side(node, found, key_dtype, schema)
        return [(p, join_found(lf, right, node.on)) for p, lf in parts]

    def _interval_join(self, node: IntervalJoinNode) -> pl.LazyFrame:
        frames: list[pl.DataFrame] = []
        for child, time in ((node.left, LEFT_TS), (node.right, RIGHT_TS)):
            ts_column = self.plan.timestamps.get(child)
            assert ts_column is not None  # validated
            frame = pl.concat([lf for _, lf in self._evaluate(child)], how="vertical").collect()
            ts = frame.get_column(ts_column)
            if ts.null_count():
                raise ValueError(
                    f"{ts.null_count()} rows have a null event time in column {ts_column!r}; "
                    "filter or fill them before the join"
                )
            frames.append(frame.with_columns(event_time_ms(ts_column, ts.dtype).alias(time)))
        left, right = frames
        left_ts = self.plan.timestamps[node.left]
        assert left_ts is not None
        kept, renamed = node.output_columns(
            [c for c in left.columns if c != LEFT_TS],
            left_ts,
            [c for c in right.columns if c != RIGHT_TS],
        )
        return join_frames(node, left.lazy(), right.lazy(), kept, renamed)

    def _input_schema(self, node: WindowAggNode) -> pl.Schema:
        parts = self._evaluate(node.input)
        return parts[0][1].collect_schema()

    def _process(self, node: ProcessNode) -> pl.DataFrame:
        """Feed every event to the process function in (event time, partition, position)
        order, then fire all timers at watermark +inf (the streaming end of input)."""
        ts_column = self.plan.timestamps.get(node.input)
        core = KeyedProcessCore(node.fn, node.keys, node.ordering, ts_column is not None)
        for partition, lf in self._evaluate(node.input):
            frame = lf.collect()
            if ts_column is None:
                for i, row in enumerate(frame.iter_rows(named=True)):
                    core.add(None, partition, i, row)
                continue
            ts = frame.get_column(ts_column)
            if ts.null_count():
                raise ValueError(
                    f"{ts.null_count()} rows have a null event time in column {ts_column!r}; "
                    "filter or fill them before process()"
                )
            times = frame.select(event_time_ms(ts_column, ts.dtype).alias(TS))[TS]
            for i, (t, row) in enumerate(zip(times, frame.iter_rows(named=True), strict=True)):
                core.add(t, partition, i, row)
        core.finish()
        return rows_to_frame(core.take_output(), node.schema, "process")

    def _window(self, node: WindowAggNode) -> pl.DataFrame:
        ts_column = self.plan.timestamps.get(node.input)
        assert ts_column is not None  # validated
        schema = self._input_schema(node)
        out_schema = output_schema(node.keys, node.aggs, schema)
        ts = event_time_ms(ts_column, schema[ts_column])
        framed = pl.concat(
            [
                lf.with_columns(
                    pl.lit(p, dtype=pl.Int64).alias(PART),
                    pl.int_range(pl.len(), dtype=pl.Int64).alias(SEQ),
                )
                for p, lf in self._evaluate(node.input)
            ],
            how="vertical",
        ).with_columns(ts.alias(TS))
        nulls = framed.select(pl.col(TS).null_count()).collect().item()
        if nulls:
            raise ValueError(
                f"{nulls} rows have a null event time in column {ts_column!r}; "
                "filter or fill them before the window"
            )
        order = [TS, PART, SEQ]
        finals = [e for a in node.aggs for e in _final_exprs(a, out_schema[a.name])]
        if isinstance(node.window, Session):
            cut = cut_sessions(framed, node.keys, node.window.gap_ms, order)
            grouped = cut.group_by([*node.keys, MINI]).agg(
                pl.col(TS).min().alias("window_start"),
                (pl.col(TS).max() + node.window.gap_ms).alias("window_end"),
                *finals,
            )
        else:
            assigned = assign_windows_lazy(framed.sort(order), node.window, TS)
            grouped = assigned.group_by(
                [*node.keys, "window_start", "window_end"], maintain_order=True
            ).agg(*finals)
        posts = [e for e in map(_post_expr, node.aggs) if e is not None]
        if posts:
            grouped = grouped.with_columns(posts)
        result = grouped.with_columns(pl.lit(False).alias("is_update")).select(
            pl.col(name).cast(dtype) for name, dtype in out_schema.items()
        )
        return result.sort(["window_end", "window_start", *node.keys]).collect()


def _lazy_transform(
    node: FilterNode | WithColumnsNode | SelectNode, lf: pl.LazyFrame
) -> pl.LazyFrame:
    if isinstance(node, FilterNode):
        return lf.filter(node.predicate)
    if isinstance(node, WithColumnsNode):
        return lf.with_columns(*node.exprs)
    return lf.select(*node.exprs)


def _final_exprs(a: Agg, dtype: pl.DataType) -> list[pl.Expr]:
    col = pl.col(a.column) if a.column is not None else None
    if a.kind == "count":
        expr = pl.len() if col is None else col.count()
    else:
        assert col is not None
        if a.kind == "sum":
            expr = pl.when(col.count() > 0).then(col.sum())
        elif a.kind == "mean":
            expr = col.cast(pl.Float64).sum() / col.count()
            expr = pl.when(col.count() > 0).then(expr)
        elif a.kind == "min":
            expr = col.min()
        elif a.kind == "max":
            expr = col.max()
        elif a.kind == "first":
            expr = col.first()
        elif a.kind == "last":
            expr = col.last()
        elif a.kind in ("var", "std"):
            x = col.cast(pl.Float64)
            expr = x.var(ddof=1) if a.kind == "var" else x.std(ddof=1)
        elif a.kind == "count_distinct":
            expr = col.drop_nulls().n_unique()
        elif a.kind == "approx_count_distinct":
            return [sketches.hll_codes(col).alias(a.name)]  # finished by _post_expr
        else:
            prio = sketches.sample_priority(pl.col(PART), pl.col(SEQ))
            p, v = sketches.sample_exprs(col, prio)
            return [p.alias(a.name + "__p"), v.alias(a.name)]  # finished by _post_expr
    return [expr.cast(dtype).alias(a.name)]


def _post_expr(a: Agg) -> pl.Expr | None:
    """The Python finish of a sketch aggregation (the same functions streaming finalizes with)."""
    if a.kind == "approx_count_distinct":
        return pl.col(a.name).map_elements(
            lambda codes: sketches.hll_estimate(sketches.hll_from_codes(codes)),
            return_dtype=pl.Int64,
        )
    if a.kind == "approx_quantile":
        q = a.q
        assert q is not None
        sample = pl.struct(pl.col(a.name + "__p").alias("p"), pl.col(a.name).alias("v"))
        return sample.map_elements(
            lambda s: sketches.sample_quantile(sketches.sample_from(s["p"], s["v"]), q),
            return_dtype=pl.Float64,
        ).alias(a.name)
    return None
