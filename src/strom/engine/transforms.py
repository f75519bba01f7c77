"""Stateless nodes applied to a frame: the one definition every backend runs them with.

A stateless node's output is a function of each batch alone, so running it per micro-batch
(streaming) or over a whole partition (bounded) gives the same rows in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, assert_never

import polars as pl

from strom.pipeline.plan import (
    ExprNode,
    FilterNode,
    MapBatchesNode,
    MapNode,
    SelectNode,
    StatelessNode,
    WithColumnsNode,
)

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


def apply_exprs(node: ExprNode, frame: Frame) -> Frame:
    """Apply a node made of Polars expressions, eagerly or lazily (as ``frame`` is)."""
    match node:
        case FilterNode():
            return frame.filter(node.predicate)
        case WithColumnsNode():
            return frame.with_columns(*node.exprs)
        case SelectNode():
            return frame.select(*node.exprs)
        case _:
            assert_never(node)


def apply_transform(node: StatelessNode, batch: pl.DataFrame) -> pl.DataFrame:
    """Apply a stateless node to one batch."""
    return compile_transform(node)(batch)


def compile_transform(node: StatelessNode) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """The node as a function of one batch, prepared once: a streaming operator calls it per
    micro-batch, where a query's fixed cost in Polars (tens of µs to a few hundred, whatever the
    batch's size) is most of the work, so what can skip a query does."""
    match node:
        case SelectNode() if node.exprs and all(e.meta.is_column() for e in node.exprs):
            # bare columns, as select("a", "b") gives: picked, not queried (the same frame,
            # and the same errors: a missing column, a name selected twice)
            names = [e.meta.output_name() for e in node.exprs]
            return lambda batch: pl.DataFrame([batch.get_column(n) for n in names])
        case FilterNode() | WithColumnsNode() | SelectNode():
            return lambda batch: apply_exprs(node, batch)
        case MapBatchesNode():
            return lambda batch: _map_batches(node, batch)
        case MapNode():
            return lambda batch: apply_map(node, batch)
        case _:
            assert_never(node)


def _map_batches(node: MapBatchesNode, batch: pl.DataFrame) -> pl.DataFrame:
    result = node.fn(batch)
    if not isinstance(result, pl.DataFrame):
        raise TypeError(
            f"map_batches function {node.fn!r} returned {type(result).__name__}, "
            "not a polars DataFrame"
        )
    return result


def apply_map(node: MapNode, batch: pl.DataFrame) -> pl.DataFrame:
    """Run a per-record ``map``/``flat_map`` over one batch, keeping row order."""
    out: list[Mapping[str, Any]] = []
    if node.flat:
        for row in batch.iter_rows(named=True):
            out.extend(node.fn(row))  # type: ignore[arg-type]
    else:
        out = [node.fn(row) for row in batch.iter_rows(named=True)]  # type: ignore[misc]
    return rows_to_frame(out, node.schema, "flat_map" if node.flat else "map")


def rows_to_frame(rows: Sequence[Mapping[str, Any]], schema: pl.Schema, where: str) -> pl.DataFrame:
    """Rows (dicts) as a frame of ``schema``: missing columns are null, extra keys an error."""
    names = set(schema)
    for row in rows:
        if not isinstance(row, Mapping):
            raise TypeError(f"{where}: output rows must be dicts, got {row!r}")
        extra = row.keys() - names
        if extra:
            raise ValueError(
                f"{where}: output row has columns {sorted(extra)} not in output_schema "
                f"{list(schema)}"
            )
    try:
        return pl.DataFrame(rows, schema=schema)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise ValueError(
            f"{where}: output rows do not fit output_schema {dict(schema)}: {exc}"
        ) from exc
