"""Which of a source's columns a plan reads, so that a source can skip building the others.

A Kafka source builds five metadata columns (``_key``, ``_topic``, ``_partition``, ``_offset``,
``_timestamp``) for every batch; a pipeline that filters and selects its own fields never reads
them, and at a few rows a batch they cost as much as decoding the values. :func:`read_columns`
finds, per source, the columns the plan can read, looking downstream through the steps whose
inputs it can name exactly (``filter``, ``with_columns``, ``select``, ``key_by``); any other
step, and any expression it cannot see through (a selector such as ``pl.all()``, a regex, an
expression Polars cannot serialize), reads every column. A column a source leaves out is never
missed: only what no step can reference is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import polars as pl

from strom.pipeline.plan import (
    FilterNode,
    KeyByNode,
    Node,
    Plan,
    PlanNode,
    SelectNode,
    SourceNode,
    WithColumnsNode,
)

__all__ = ["Columns", "expr_roots", "read_columns", "union_columns"]

Columns = frozenset[str] | None
"""Column names, or ``None``: every column."""


def read_columns(plan: Plan) -> dict[SourceNode, Columns]:
    """Per source node: the names of its columns the plan may read (``None``: all of them; a
    source's event-time column is always read)."""
    consumers: dict[Node, list[PlanNode]] = {}
    for node in plan.nodes():
        for upstream in node.inputs:
            consumers.setdefault(upstream, []).append(node)
    memo: dict[Node, Columns] = {}

    def reads(node: Node) -> Columns:
        """The columns of ``node``'s output that its consumers may read."""
        if node in memo:
            return memo[node]
        found: set[str] = set()
        for consumer in consumers.get(node, []):
            needed = _needs(consumer, reads)
            if needed is None:
                memo[node] = None
                return None
            found |= needed
        memo[node] = frozenset(found)
        return memo[node]

    out: dict[SourceNode, Columns] = {}
    for source in plan.sources():
        columns = reads(source)
        ts = plan.timestamps.get(source) or source.timestamp
        out[source] = None if columns is None else columns | ({ts} if ts else set())
    return out


def _needs(consumer: PlanNode, reads: Callable[[Node], Columns]) -> Columns:
    """The columns of its input that ``consumer`` (and what follows it) may read."""
    match consumer:
        case SelectNode():
            return expr_roots(consumer.exprs)
        case FilterNode():
            return union_columns(expr_roots((consumer.predicate,)), reads(consumer))
        case WithColumnsNode():
            return union_columns(expr_roots(consumer.exprs), reads(consumer))
        case KeyByNode():
            return union_columns(frozenset(consumer.keys), reads(consumer))
        case _:
            return None


def union_columns(a: Columns, b: Columns) -> Columns:
    """Both sets of columns (``None``, every column, absorbs the other)."""
    return None if a is None or b is None else a | b


def expr_roots(exprs: Iterable[pl.Expr]) -> Columns:
    """The columns ``exprs`` read, or ``None`` if that cannot be told exactly (a Python
    function inside, a selector or any expression with several outputs reads by pattern)."""
    found: set[str] = set()
    for expr in exprs:
        try:
            tree = expr.meta.serialize(format="json")
        except Exception:  # a Python function inside, or anything Polars cannot write out
            return None
        if '"Selector"' in tree or expr.meta.has_multiple_outputs():
            return None  # pl.all(), pl.col("a", "b"), regexes, pl.nth(...), dtypes
        found.update(expr.meta.root_names())
    return frozenset(found)
