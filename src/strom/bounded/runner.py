"""The bounded runner: the same plan, run to completion over bounded sources.

Every source partition is scanned whole (lazily, so Polars parallelizes file reads and
expressions); windows are computed as one vectorized group-by, as if the watermark jumped from
its minimum to ``+inf`` after the last event. So no event is late: the late output is empty,
every result has ``is_update=False``, and each window appears once.

Interval joins are one Polars join of both whole inputs, then the time filter: every match,
no late rows (their late outputs are empty), so they equal a streaming run with nothing late.
As-of joins likewise are one Polars ``join_asof`` of both whole inputs.

Keyed aggregations without a window are one group-by over the whole input (one row per key,
ordered by key); equi-joins one hash join of both whole inputs; sort, top-k and distinct one
query over the whole input, in partition order (:mod:`strom.engine.relational`).

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

from typing import assert_never

import polars as pl

from strom.connectors.deadletter import DeadLetterOutput, batch_dead_letters
from strom.connectors.files import FileReadError, FileSource
from strom.engine.asof import AT, asof_frames
from strom.engine.constants import LEFT_TS, PART, RIGHT_TS, SEQ, SESSION, TS
from strom.engine.contracts import BoundedSource
from strom.engine.joins import join_found, join_frames, right_side, value_schema
from strom.engine.keyed_process import KeyedProcessCore
from strom.engine.relational import distinct_frames, keyed_agg_frames, sort_frames
from strom.engine.relational import join_frames as equi_join_frames
from strom.engine.schemas import late_schema, window_schema
from strom.engine.scoring import score_frame
from strom.engine.sessions import cut_sessions
from strom.engine.transforms import apply_exprs, apply_transform, rows_to_frame
from strom.pipeline.plan import (
    AsofJoinNode,
    DistinctNode,
    FilterNode,
    IntervalJoinLateNode,
    IntervalJoinNode,
    JoinNode,
    KeyByNode,
    KeyedAggNode,
    LateNode,
    LookupJoinNode,
    MapBatchesNode,
    MapNode,
    Node,
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
from strom.pipeline.stream import Pipeline
from strom.pipeline.validate import PlanError
from strom.pipeline.windows import Session, assign_windows_lazy, event_time_ms

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
        try:
            self._run_sinks()
        finally:  # a source's connections (a PostgresTable's) end with the run, as streaming
            for node in self.plan.sources():
                node.source.close()

    def _run_sinks(self) -> None:
        for sink_node in self.plan.sinks:
            frames = [lf for _, lf in self._evaluate(sink_node.input)]
            try:
                result = pl.concat(pl.collect_all(frames), how="vertical") if frames else None
            except pl.exceptions.PolarsError as exc:
                raise self._unreadable_file() or exc from exc
            sink = sink_node.sink
            sink.open()
            try:
                if result is not None and result.height:
                    sink.write(result)
            finally:
                sink.close()

    def _unreadable_file(self) -> FileReadError | None:
        """After a failed query: the first input file that does not read on its own, if any
        (the query's error rarely names the file among thousands)."""
        for node in self.plan.sources():
            if isinstance(node.source, FileSource):
                bad = node.source.find_unreadable()
                if bad is not None:
                    return bad
        return None

    def _evaluate(self, node: PlanNode) -> Partitions:
        if node not in self._memo:
            self._memo[node] = self._compute(node)
        return self._memo[node]

    def _compute(self, node: PlanNode) -> Partitions:
        match node:
            case SourceNode():
                source = node.source
                if not isinstance(source, BoundedSource):
                    raise PlanError(
                        f"source {node.name!r} ({type(source).__name__}) is not bounded; "
                        "run it with strom.runtime instead"
                    )
                first = self._first_partition[node]
                count = source.partition_count()
                return [(first + i, source.scan_partition(i)) for i in range(count)]
            case FilterNode() | WithColumnsNode() | SelectNode():
                return [(p, apply_exprs(node, lf)) for p, lf in self._evaluate(node.input)]
            case MapBatchesNode() | MapNode():
                return [
                    (p, apply_transform(node, lf.collect()).lazy())
                    for p, lf in self._evaluate(node.input)
                ]
            case ProcessNode():
                return [(-1, self._process(node).lazy())]
            case LookupJoinNode():
                return self._lookup_join(node)
            case IntervalJoinNode():
                return [(-1, self._interval_join(node))]
            case AsofJoinNode():
                return [(-1, self._asof_join(node).lazy())]
            case IntervalJoinLateNode():
                side = node.input.inputs[0 if node.side == "left" else 1]
                schema = pl.concat([lf for _, lf in self._evaluate(side)]).collect_schema()
                return [(-1, pl.LazyFrame(schema=schema))]
            case PredictNode():
                return self._predict(node)
            case KeyByNode() | SinkNode():
                return self._evaluate(node.input)
            case UnionNode():
                return [part for branch in node.branches for part in self._evaluate(branch)]
            case WindowAggNode():
                return [(-1, self._window(node).lazy())]
            case KeyedAggNode():
                ts_column = self.plan.timestamps.get(node.input)
                return [(-1, keyed_agg_frames(node, self._evaluate(node.input), ts_column))]
            case JoinNode():
                left, right = self._evaluate(node.left), self._evaluate(node.right)
                return [(-1, equi_join_frames(node, left, right))]
            case SortNode():
                return [(-1, sort_frames(node, self._evaluate(node.input)))]
            case DistinctNode():
                return [(-1, distinct_frames(node, self._evaluate(node.input)))]
            case LateNode():
                window = node.input
                assert isinstance(window, WindowAggNode)
                late = late_schema(self._input_schema(window))
                return [(-1, pl.LazyFrame(schema=late))]
            case _:
                assert_never(node)

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

    def _predict(self, node: PredictNode) -> Partitions:
        """One model call per partition, with the version ``node.ref`` names when the run
        starts; a partition the model raises on goes whole to the dead-letter output."""
        model = node.models.load(node.model, node.models.resolve(node.model, node.ref))
        feature_version = node.feature_version or model.feature_version
        ts_column = self.plan.timestamps.get(node.input)
        dead = DeadLetterOutput(node.dead_letter, f"predict {node.model!r}")
        out: Partitions = []
        try:
            for p, lf in self._evaluate(node.input):
                frame = lf.collect()
                try:
                    scored = score_frame(model, frame, node.output, feature_version)
                except Exception as exc:  # the partition's failure, not the run's
                    reason = (
                        f"model {model.name!r} v{model.version} raised {type(exc).__name__}: {exc}"
                    )
                    ts = (
                        None
                        if ts_column is None
                        else event_time_ms(ts_column, frame.schema[ts_column])
                    )
                    dead.write(batch_dead_letters(frame, reason, ts))
                    scored = score_frame(model, frame.clear(), node.output, feature_version)
                out.append((p, scored.lazy()))
        finally:
            dead.close()
        return out

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

    def _asof_join(self, node: AsofJoinNode) -> pl.DataFrame:
        """One as-of join of both whole inputs (each in partition order): every event, no
        late rows (their late outputs are empty)."""
        frames: list[pl.DataFrame] = []
        for child in (node.left, node.right):
            ts_column = self.plan.timestamps.get(child)
            assert ts_column is not None  # validated
            frame = pl.concat([lf for _, lf in self._evaluate(child)], how="vertical").collect()
            ts = frame.get_column(ts_column)
            if ts.null_count():
                raise ValueError(
                    f"{ts.null_count()} rows have a null event time in column {ts_column!r}; "
                    "filter or fill them before the as-of join"
                )
            frames.append(
                frame.with_columns(event_time_ms(ts_column, ts.dtype).cast(pl.Int64).alias(AT))
            )
        left, right = frames
        left_columns = [c for c in left.columns if c != AT]
        names = node.output_columns(left_columns, [c for c in right.columns if c != AT])
        return asof_frames(node, left, right, left_columns, names)

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
        out_schema = window_schema(node.keys, node.aggs, schema)
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
        finals = [e for a in node.aggs for e in a.bounded_exprs(out_schema[a.name])]
        if isinstance(node.window, Session):
            cut = cut_sessions(framed, node.keys, node.window.gap_ms, order)
            grouped = cut.group_by([*node.keys, SESSION]).agg(
                pl.col(TS).min().alias("window_start"),
                (pl.col(TS).max() + node.window.gap_ms).alias("window_end"),
                *finals,
            )
        else:
            assigned = assign_windows_lazy(framed.sort(order), node.window, TS)
            grouped = assigned.group_by(
                [*node.keys, "window_start", "window_end"], maintain_order=True
            ).agg(*finals)
        group = [*node.keys, "window_start", "window_end"]
        posts = [
            e for a in node.aggs if (e := a.bounded_finish(out_schema[a.name], group)) is not None
        ]
        if posts:
            grouped = grouped.with_columns(posts)
        result = grouped.with_columns(pl.lit(False).alias("is_update")).select(
            pl.col(name).cast(dtype) for name, dtype in out_schema.items()
        )
        return result.sort(["window_end", "window_start", *node.keys]).collect()
