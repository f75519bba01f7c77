"""Plan validation: everything that can be checked before running, with errors naming the step.

Schemas are propagated wherever they are knowable (a source that declares one, Polars expressions
resolved against it); after a :class:`MapBatchesNode` without a declared schema, column checks are
skipped until run time.
"""

from __future__ import annotations

from typing import assert_never

import polars as pl

from strom.engine import transforms  # a module: engine.transforms imports the plan back
from strom.engine.aggregations import Aggregation
from strom.engine.constants import IS_UPDATE, WINDOW_COLUMNS
from strom.engine.schemas import keyed_agg_schema, late_schema, window_schema
from strom.engine.scoring import PREDICTION_COLUMNS, check_features, prediction_schema
from strom.pipeline.plan import (
    JOIN_HOWS,
    JOIN_TIME,
    AsofJoinNode,
    DistinctNode,
    ExprNode,
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
    topological,
)
from strom.pipeline.windows import Session


class PlanError(ValueError):
    """The pipeline cannot run as written; the message names the step and the fix."""


def validate(sinks: tuple[SinkNode, ...]) -> Plan:
    """Check every node reachable from ``sinks`` and return the :class:`Plan`."""
    if not sinks:
        raise PlanError("the pipeline has no sink: call .sink(...) on at least one stream")
    schemas: dict[Node, pl.Schema | None] = {}
    timestamps: dict[Node, str | None] = {}
    for node in topological(sinks):
        schemas[node], timestamps[node] = _check(node, schemas, timestamps)
    return Plan(sinks=sinks, schemas=schemas, timestamps=timestamps)


def _check(
    node: PlanNode, schemas: dict[Node, pl.Schema | None], timestamps: dict[Node, str | None]
) -> tuple[pl.Schema | None, str | None]:
    up = schemas.get(node.inputs[0]) if node.inputs else None
    ts = timestamps.get(node.inputs[0]) if node.inputs else None
    where = f"{node.label}: "
    match node:
        case SourceNode():
            return _check_source(node), node.timestamp
        case FilterNode() | WithColumnsNode() | SelectNode():
            if up is None:
                return None, ts
            out = _resolve(node, up, where)
            if isinstance(node, SelectNode) and ts is not None and ts not in out:
                ts = None  # the event time was projected away; a later window reports it
            return out, ts
        case MapBatchesNode():
            return node.schema, ts
        case MapNode():
            return node.schema, ts if ts in node.schema else None
        case ProcessNode():
            return _check_process(node, up, ts, where)
        case LookupJoinNode():
            return _check_lookup(node, up, where), ts
        case KeyByNode():
            if not node.keys:
                raise PlanError(f"{where}key_by() needs at least one key column")
            _require_columns(up, node.keys, where + "key column")
            return up, ts
        case WindowAggNode():
            return _check_window(node, up, ts, where), "window_end"
        case KeyedAggNode():
            return _check_keyed_agg(node, up, where), None
        case JoinNode():
            return _check_join(node, schemas, where), timestamps[node.left]
        case SortNode():
            _check_sort(node, up, where)
            return up, ts
        case DistinctNode():
            _require_columns(up, node.subset, where + "distinct column")
            return up, ts
        case LateNode():
            ts = timestamps.get(node.input.inputs[0])
            input_schema = schemas.get(node.input.inputs[0]) if up is not None else None
            return None if input_schema is None else late_schema(input_schema), ts
        case IntervalJoinNode():
            return _check_interval_join(node, schemas, timestamps, where)
        case AsofJoinNode():
            return _check_asof_join(node, schemas, timestamps, where), timestamps[node.left]
        case IntervalJoinLateNode():
            side = node.input.inputs[0 if node.side == "left" else 1]
            return schemas.get(side), timestamps.get(side)
        case UnionNode():
            return _check_union(node, schemas, timestamps, where)
        case PredictNode():
            return _check_predict(node, up, where), ts
        case SinkNode():
            return up, ts
        case _:
            assert_never(node)


def _check_source(node: SourceNode) -> pl.Schema | None:
    where = f"source {node.name!r}: "
    if node.max_out_of_orderness_ms < 0:
        raise PlanError(where + "max_out_of_orderness_ms must be >= 0")
    if node.idle_timeout_ms is not None and node.idle_timeout_ms <= 0:
        raise PlanError(where + "idle_timeout_ms must be positive (or None to never idle)")
    if node.source.partition_count() < 1:
        raise PlanError(where + "the source has no partitions")
    schema = node.source.schema()
    if schema is not None and node.timestamp is not None:
        if node.timestamp not in schema:
            raise PlanError(
                f"{where}timestamp column {node.timestamp!r} is not in the source's columns "
                f"{list(schema)}"
            )
        dtype = schema[node.timestamp]
        if not (dtype.is_integer() or isinstance(dtype, pl.Datetime)):
            raise PlanError(
                f"{where}timestamp column {node.timestamp!r} has type {dtype}; "
                "it must be integer milliseconds since the epoch or a Datetime"
            )
    return schema


def _resolve(node: ExprNode, up: pl.Schema, where: str) -> pl.Schema:
    lf = pl.LazyFrame(schema=up)
    try:
        if isinstance(node, FilterNode):
            dtype = lf.select(node.predicate).collect_schema().dtypes()[0]
            if dtype != pl.Boolean:
                raise PlanError(f"{where}the predicate has type {dtype}, not Boolean")
        return transforms.apply_exprs(node, lf).collect_schema()
    except pl.exceptions.PolarsError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise PlanError(f"{where}{first_line} (available columns: {list(up)})") from exc


def _require_columns(schema: pl.Schema | None, columns: tuple[str, ...], what: str) -> None:
    if schema is None:
        return
    for column in columns:
        if column not in schema:
            raise PlanError(f"{what} {column!r} does not exist; available columns: {list(schema)}")


def _check_window(
    node: WindowAggNode, up: pl.Schema | None, ts: str | None, where: str
) -> pl.Schema | None:
    if ts is None:
        raise PlanError(
            f"{where}windows need event time: pass timestamp='column' to p.source(...) and keep "
            "that column up to the window"
        )
    if not node.aggs:
        raise PlanError(f"{where}.agg(...) needs at least one aggregation, e.g. agg.count()")
    if node.allowed_lateness_ms < 0:
        raise PlanError(f"{where}allowed_lateness_ms must be >= 0")
    if node.emit not in ("final", "update"):
        raise PlanError(f"{where}emit must be 'final' or 'update', not {node.emit!r}")
    for key in node.keys:
        if key in WINDOW_COLUMNS:
            raise PlanError(
                f"{where}key column {key!r} clashes with the window's own output column of that "
                f"name; rename it first, e.g. .with_columns(pl.col({key!r}).alias('my_{key}'))"
            )
    _check_output_names(node.keys, node.aggs, WINDOW_COLUMNS, "the window's", where)
    if isinstance(node.window, Session) and node.window.gap_ms <= 0:
        raise PlanError(f"{where}session gap must be positive")
    if up is None:
        return None
    _require_columns(up, (ts,), where + "timestamp column")
    _require_columns(up, node.keys, where + "key column")
    _check_agg_inputs(node.aggs, up, where)
    return window_schema(node.keys, node.aggs, up)


def _check_agg_inputs(aggs: tuple[Aggregation, ...], up: pl.Schema, where: str) -> None:
    columns = tuple(a.column for a in aggs if a.column is not None)
    _require_columns(up, columns, where + "aggregated column")
    for a in aggs:
        reason = None if a.column is None else a.input_error(up[a.column])
        if reason is not None:
            raise PlanError(f"{where}{reason}: column {a.column!r} of {a!r}")


def _check_keyed_agg(node: KeyedAggNode, up: pl.Schema | None, where: str) -> pl.Schema | None:
    if not node.keys:
        raise PlanError(f"{where}agg() without a window needs a key: call .key_by(...) first")
    if not node.aggs:
        raise PlanError(f"{where}.agg(...) needs at least one aggregation, e.g. agg.count()")
    if IS_UPDATE in node.keys:
        raise PlanError(
            f"{where}key column {IS_UPDATE!r} clashes with the result's own column of that "
            f"name; rename it first, e.g. .with_columns(pl.col({IS_UPDATE!r}).alias('my_key'))"
        )
    _check_output_names(node.keys, node.aggs, (IS_UPDATE,), "the result's", where)
    if up is None:
        return None
    _require_columns(up, node.keys, where + "key column")
    _check_agg_inputs(node.aggs, up, where)
    return keyed_agg_schema(node.keys, node.aggs, up)


def _check_output_names(
    keys: tuple[str, ...],
    aggs: tuple[Aggregation, ...],
    reserved: tuple[str, ...],
    owner: str,
    where: str,
) -> None:
    """Every aggregation's output name is its own: no two alike, none a key or a column the
    result has anyway (``reserved``)."""
    seen: dict[str, str] = {}
    for a in aggs:
        fix = f"name it with agg.{a.label}(..., name='...') or .alias('...')"
        if a.name in keys:
            raise PlanError(
                f"{where}aggregation {a!r} would produce column {a.name!r}, which is a key "
                f"column; {fix}"
            )
        if a.name in reserved:
            raise PlanError(
                f"{where}aggregation {a!r} would produce column {a.name!r}, one of {owner} "
                f"own columns {list(reserved)}; {fix}"
            )
        if a.name in seen:
            raise PlanError(
                f"{where}aggregations {seen[a.name]} and {a!r} both produce column "
                f"{a.name!r}; {fix}"
            )
        seen[a.name] = repr(a)


def _check_join(
    node: JoinNode, schemas: dict[Node, pl.Schema | None], where: str
) -> pl.Schema | None:
    if node.how not in JOIN_HOWS:
        raise PlanError(f"{where}how must be one of {list(JOIN_HOWS)}, not {node.how!r}")
    if not isinstance(node.suffix, str) or not node.suffix:
        raise PlanError(f"{where}suffix must be a non-empty string, not {node.suffix!r}")
    if node.ttl_ms is not None and node.ttl_ms <= 0:
        raise PlanError(f"{where}ttl_ms must be positive (or None in bounded runs)")
    if not node.left_on or len(node.left_on) != len(node.right_on):
        raise PlanError(
            f"{where}left_on {list(node.left_on)} and right_on {list(node.right_on)} must name "
            "the same number (at least one) of key columns"
        )
    for keys in (node.left_on, node.right_on):
        if len(set(keys)) != len(keys):
            raise PlanError(f"{where}key columns {list(keys)} name a column twice")
    left, right = schemas[node.left], schemas[node.right]
    _require_columns(left, node.left_on, f"{where}left key column")
    _require_columns(right, node.right_on, f"{where}right key column")
    if left is None or right is None:
        return None
    for lk, rk in zip(node.left_on, node.right_on, strict=True):
        if left[lk] != right[rk]:
            raise PlanError(
                f"{where}left key {lk!r} is {left[lk]} but right key {rk!r} is {right[rk]}; "
                "cast one so both have the same type"
            )
    try:
        renamed = node.output_columns(list(left), list(right))
    except ValueError as exc:
        raise PlanError(f"{where}{exc}") from exc
    return pl.Schema({**left, **{name: right[c] for c, name in renamed.items()}})


def _check_sort(node: SortNode, up: pl.Schema | None, where: str) -> None:
    if not node.by:
        raise PlanError(f"{where}sort() needs at least one column")
    if len(node.descending) != len(node.by):
        raise PlanError(
            f"{where}descending has {len(node.descending)} value(s) for {len(node.by)} column(s)"
        )
    if node.limit is not None and (
        not isinstance(node.limit, int) or isinstance(node.limit, bool) or node.limit < 0
    ):
        raise PlanError(f"{where}k must be a non-negative integer, not {node.limit!r}")
    _require_columns(up, node.by, where + "sort column")
    if up is not None:
        for column in node.by:
            reason = _unorderable(up[column])
            if reason is not None:
                raise PlanError(f"{where}sort column {column!r} {reason}")


def _unorderable(dtype: pl.DataType) -> str | None:
    if dtype in (pl.Null, pl.Object) or isinstance(dtype, pl.Struct | pl.List | pl.Array):
        return f"has type {dtype}, which has no order"
    return None


def _check_lookup(node: LookupJoinNode, up: pl.Schema | None, where: str) -> pl.Schema | None:
    if node.ttl_ms < 0:
        raise PlanError(f"{where}ttl_ms must be >= 0 (0 looks up every batch)")
    if not node.columns:
        raise PlanError(f"{where}columns=[...] names no table column to add")
    if len(set(node.columns)) != len(node.columns):
        raise PlanError(f"{where}columns {list(node.columns)} name a column twice")
    _require_columns(up, (node.on,), where + "join column on=")
    table = node.table.schema()
    if table is not None:
        if node.table.key not in table:
            raise PlanError(f"{where}the table has no key column {node.table.key!r}: {list(table)}")
        _require_columns(table, node.columns, where + "table column")
    if up is not None:
        clash = [c for c in node.columns if c in up]
        if clash:
            raise PlanError(
                f"{where}columns {clash} already exist in the stream; select them away or "
                "rename them first"
            )
    if up is None or table is None:
        return None
    return pl.Schema({**up, **{c: table[c] for c in node.columns}})


def _check_process(
    node: ProcessNode, up: pl.Schema | None, ts: str | None, where: str
) -> tuple[pl.Schema, str | None]:
    if not node.keys:
        raise PlanError(f"{where}process() needs a keyed stream: call .key_by(...) first")
    if ts is None and node.ordering == "event_time":
        raise PlanError(
            f"{where}process(ordering='event_time') needs event time: pass timestamp='column' "
            "to p.source(...) and keep that column, or use ordering='arrival'"
        )
    _require_columns(up, node.keys, where + "key column")
    if ts is not None:
        _require_columns(up, (ts,), where + "timestamp column")
    return node.schema, ts if ts in node.schema else None


def _check_interval_join(
    node: IntervalJoinNode,
    schemas: dict[Node, pl.Schema | None],
    timestamps: dict[Node, str | None],
    where: str,
) -> tuple[pl.Schema | None, str]:
    for name, bound in (("lower_ms", node.lower_ms), ("upper_ms", node.upper_ms)):
        if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
            raise PlanError(f"{where}{name} must be integer milliseconds or None, not {bound!r}")
    if node.lower_ms is not None and node.upper_ms is not None and node.lower_ms > node.upper_ms:
        raise PlanError(
            f"{where}lower_ms={node.lower_ms} is greater than upper_ms={node.upper_ms}: "
            "no row could ever match"
        )
    if not isinstance(node.suffix, str):
        raise PlanError(f"{where}suffix must be a string, not {node.suffix!r}")
    for keys in (node.left_on, node.right_on):
        if len(set(keys)) != len(keys):
            raise PlanError(f"{where}key columns {list(keys)} name a column twice")
    left, right = schemas[node.left], schemas[node.right]
    left_ts, right_ts = timestamps[node.left], timestamps[node.right]
    for side, ts, schema, keys in (
        ("left", left_ts, left, node.left_on),
        ("right", right_ts, right, node.right_on),
    ):
        if ts is None:
            raise PlanError(
                f"{where}interval_join() needs event time on both sides; the {side} stream has "
                "none: pass timestamp='column' to p.source(...) and keep that column"
            )
        _require_columns(schema, keys, f"{where}{side} key column")
        _require_columns(schema, (ts,), f"{where}{side} timestamp column")
    if left is None or right is None:
        return None, JOIN_TIME
    for lk, rk in zip(node.left_on, node.right_on, strict=True):
        if left[lk] != right[rk]:
            raise PlanError(
                f"{where}left key {lk!r} is {left[lk]} but right key {rk!r} is {right[rk]}; "
                "cast one so both have the same type"
            )
    assert left_ts is not None
    try:
        kept, renamed = node.output_columns(list(left), left_ts, list(right))
    except ValueError as exc:
        raise PlanError(f"{where}{exc}") from exc
    out: dict[str, pl.DataType] = {c: left[c] for c in kept}
    out.update({name: right[c] for c, name in renamed.items()})
    out[JOIN_TIME] = pl.Int64()
    return pl.Schema(out), JOIN_TIME


def _check_asof_join(
    node: AsofJoinNode,
    schemas: dict[Node, pl.Schema | None],
    timestamps: dict[Node, str | None],
    where: str,
) -> pl.Schema | None:
    if node.ttl_ms is not None and (
        not isinstance(node.ttl_ms, int) or isinstance(node.ttl_ms, bool) or node.ttl_ms < 0
    ):
        raise PlanError(f"{where}ttl must be >= 0 milliseconds (or None: no limit)")
    if not isinstance(node.suffix, str) or not node.suffix:
        raise PlanError(f"{where}suffix must be a non-empty string, not {node.suffix!r}")
    for keys in (node.left_on, node.right_on):
        if len(set(keys)) != len(keys):
            raise PlanError(f"{where}key columns {list(keys)} name a column twice")
    left, right = schemas[node.left], schemas[node.right]
    for side, child, schema, keys in (
        ("left", node.left, left, node.left_on),
        ("right", node.right, right, node.right_on),
    ):
        ts = timestamps[child]
        if ts is None:
            what = "events" if side == "left" else "features (when each row became available)"
            raise PlanError(
                f"{where}asof_join() needs event time on both sides; the {side} stream of "
                f"{what} has none: pass timestamp='column' to p.source(...) and keep that column"
            )
        _require_columns(schema, keys, f"{where}{side} key column")
        _require_columns(schema, (ts,), f"{where}{side} timestamp column")
    if left is None or right is None:
        return None
    for lk, rk in zip(node.left_on, node.right_on, strict=True):
        if left[lk] != right[rk]:
            raise PlanError(
                f"{where}left key {lk!r} is {left[lk]} but right key {rk!r} is {right[rk]}; "
                "cast one so both have the same type"
            )
    try:
        renamed = node.output_columns(list(left), list(right))
    except ValueError as exc:
        raise PlanError(f"{where}{exc}") from exc
    return pl.Schema({**left, **{name: right[c] for c, name in renamed.items()}})


def _check_union(
    node: UnionNode,
    schemas: dict[Node, pl.Schema | None],
    timestamps: dict[Node, str | None],
    where: str,
) -> tuple[pl.Schema | None, str | None]:
    branch_schemas = [schemas[b] for b in node.branches]
    branch_ts = {timestamps[b] for b in node.branches}
    if len(branch_ts) > 1:
        raise PlanError(
            f"{where}branches have different event-time columns {sorted(map(str, branch_ts))}"
        )
    known = [s for s in branch_schemas if s is not None]
    for other in known[1:]:
        if other != known[0]:
            raise PlanError(
                f"{where}branches have different schemas: {dict(known[0])} vs {dict(other)}"
            )
    schema = known[0] if len(known) == len(branch_schemas) else None
    return schema, branch_ts.pop()


def _check_predict(node: PredictNode, up: pl.Schema | None, where: str) -> pl.Schema | None:
    """Load and verify the model now (a bad model fails the build, not the run), and check the
    stream carries its features."""
    where = f"{where}model {node.model!r}: "
    if not node.output or node.output in PREDICTION_COLUMNS:
        raise PlanError(f"{where}output={node.output!r} must be a new column name")
    try:
        model = node.models.load(node.model, node.models.resolve(node.model, node.ref))
    except (ValueError, OSError, ImportError) as exc:
        raise PlanError(f"{where}{exc}") from exc
    trained, serving = model.feature_version, node.feature_version
    if trained is not None and serving is not None and trained != serving:
        raise PlanError(
            f"{where}v{model.version} was trained on features of version {trained!r}, but the "
            f"stream's are {serving!r}: rebuild the training set or the feature view"
        )
    if up is None:
        return None
    reason = check_features(model, up)
    if reason is not None:
        raise PlanError(where + reason)
    taken = [c for c in (node.output, *PREDICTION_COLUMNS) if c in up]
    if taken:
        raise PlanError(f"{where}columns {taken} already exist in the stream; rename them first")
    return prediction_schema(up, node.output)
