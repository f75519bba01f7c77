"""Which columns a sink path's nodes must deliver: the local engine ships only those.

A stage writes its input to shuffle files and its results to files, so a column nothing after
it reads is bytes written, read and hashed for nothing (TPC-H's ``lineitem`` has 16 columns; Q5
reads 4). The single-process runner gets the same effect from Polars' projection pushdown over
its one lazy query; the local engine's queries end at each stage, so :func:`needed` does it
across them: it walks the path from the sink to the sources and gives each node the set of its
output columns that something after it reads (None: every one, or not known, as after a
``map_batches`` function or an expression with a column selector). Each branch into a stage
then ends with a projection to its node's set (:mod:`strom.batch.planner`), which Polars pushes
down into the file scans.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import assert_never

import polars as pl

from strom.engine.projection import Columns, expr_roots, union_columns
from strom.engine.relational import needs_positions
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

Need = Columns
"""Columns a node's consumers read (None: all of them)."""


def needed(plan: Plan, sink: SinkNode) -> dict[PlanNode, Need]:
    """Every node of ``sink``'s path: the columns of its output read after it."""
    need: dict[PlanNode, Need] = {sink.input: None}
    for node in _consumers_first(sink.input):
        for child, columns in _input_needs(plan, node, need[node]):
            need[child] = union_columns(need[child], columns) if child in need else columns
    return need


def _consumers_first(root: PlanNode) -> list[PlanNode]:
    """The nodes under ``root``, each after every node that reads it (reverse post-order)."""
    order: list[PlanNode] = []
    seen: set[int] = set()
    stack: list[tuple[PlanNode, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in node.inputs)
    return order[::-1]


def _plus(need: Need, columns: Iterable[str | None]) -> Need:
    return None if need is None else need | {c for c in columns if c is not None}


def _input_needs(plan: Plan, node: PlanNode, need: Need) -> list[tuple[PlanNode, Need]]:
    """What each input of ``node`` must deliver, given what ``node`` must."""
    match node:
        case SourceNode():
            return []
        case FilterNode():
            return [(node.input, union_columns(need, expr_roots([node.predicate])))]
        case WithColumnsNode():
            roots = expr_roots(node.exprs)
            if need is None or roots is None:
                return [(node.input, None)]
            written = {e.meta.output_name() for e in node.exprs}
            return [(node.input, (need - written) | roots)]
        case SelectNode():
            return [(node.input, expr_roots(node.exprs))]
        case KeyByNode():
            return [(node.input, need)]
        case UnionNode():
            return [(branch, need) for branch in node.branches]
        case WindowAggNode() | KeyedAggNode():
            ts = plan.timestamps.get(node.input)
            uses_ts = isinstance(node, WindowAggNode) or needs_positions(node.aggs)
            columns = [*node.keys, *(a.column for a in node.aggs), ts if uses_ts else None]
            return [(node.input, _plus(frozenset(), columns))]
        case JoinNode():
            return _join_needs(plan, node, need)
        case SortNode():
            return [(node.input, _plus(need, node.by))]
        case DistinctNode():
            return [(node.input, _plus(need, node.subset) if node.subset else None)]
        case (
            MapBatchesNode()
            | MapNode()
            | ProcessNode()
            | LookupJoinNode()
            | IntervalJoinNode()
            | IntervalJoinLateNode()
            | LateNode()
            | PredictNode()
            | AsofJoinNode()
        ):
            return [(child, None) for child in node.inputs]
        case SinkNode():
            raise AssertionError("a sink has no downstream node")
        case _:
            assert_never(node)


def _join_needs(plan: Plan, node: JoinNode, need: Need) -> list[tuple[PlanNode, Need]]:
    left, right = plan.schemas.get(node.left), plan.schemas.get(node.right)
    if need is None or left is None or right is None:
        return [(node.left, None), (node.right, None)]
    renamed = node.output_columns(list(left), list(right))
    from_right = [c for c, name in renamed.items() if name in need]
    return [
        (node.left, (need & set(left)) | set(node.left_on)),
        (node.right, frozenset([*from_right, *node.right_on])),
    ]


def in_order(
    need: Need, schema: pl.Schema | None, extra: Sequence[str] = ()
) -> tuple[str, ...] | None:
    """``need`` and ``extra`` as a projection in ``schema``'s column order (None: keep all)."""
    if need is None or schema is None:
        return None
    wanted = need | set(extra)
    return tuple(c for c in schema if c in wanted)
