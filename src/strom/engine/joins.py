"""The joins both backends share: the interval join's frame join and the lookup join's.

An interval join pairs every left and right row with equal keys whose event times are in
bounds (:func:`join_frames`); backends differ only in which rows they hand it (the bounded
runner: both whole inputs; the streaming runtime: each batch against the other side's state).
A lookup join is a left join of the stream on its ``on`` column against the rows its
:class:`~strom.engine.contracts.LookupTable` returned (:func:`join_found`), keeping every input row
once and in order; keys the table does not hold, and null keys, give nulls.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from strom.engine.constants import LEFT_TS, LOOKUP_KEY, RIGHT_TS
from strom.pipeline.plan import JOIN_TIME, IntervalJoinNode, LookupJoinNode


def join_frames(
    node: IntervalJoinNode,
    left: pl.LazyFrame,
    right: pl.LazyFrame,
    kept_left: list[str],
    right_names: dict[str, str],
) -> pl.LazyFrame:
    """Every in-bounds pair of ``left`` (carrying :data:`LEFT_TS`) and ``right`` (carrying
    :data:`RIGHT_TS`) rows with equal keys, as output columns (see ``node.output_columns``)."""
    keys = [f"__strom_key{i}" for i in range(len(node.right_on))]
    right = right.select(
        *(pl.col(c).alias(k) for c, k in zip(node.right_on, keys, strict=True)),
        *(pl.col(c).alias(name) for c, name in right_names.items()),
        RIGHT_TS,
    )
    joined = left.join(right, left_on=list(node.left_on), right_on=keys, how="inner", coalesce=True)
    conditions = []
    if node.lower_ms is not None:
        conditions.append(pl.col(RIGHT_TS) >= pl.col(LEFT_TS) + node.lower_ms)
    if node.upper_ms is not None:
        conditions.append(pl.col(RIGHT_TS) <= pl.col(LEFT_TS) + node.upper_ms)
    if conditions:
        joined = joined.filter(*conditions)
    return joined.select(
        *kept_left,
        *right_names.values(),
        pl.max_horizontal(LEFT_TS, RIGHT_TS).alias(JOIN_TIME),
    )


def value_schema(node: LookupJoinNode, found: pl.DataFrame | None = None) -> dict[str, Any]:
    """The added columns' types: from the table's schema, else from ``found``, else Null."""
    table = node.table.schema()
    out: dict[str, Any] = {}
    for c in node.columns:
        if table is not None and c in table:
            out[c] = table[c]
        elif found is not None and c in found.columns:
            out[c] = found.schema[c]
        else:
            out[c] = pl.Null()
    return out


def right_side(
    node: LookupJoinNode, found: pl.DataFrame, key_dtype: pl.DataType, schema: dict[str, Any]
) -> pl.DataFrame:
    """``found`` (table rows) as the join's right side: the key (cast to the stream key's type,
    one row per key) and the value columns in their output types."""
    key = node.table.key
    missing = [c for c in (key, *node.columns) if c not in found.columns]
    if missing:
        raise ValueError(
            f"lookup_join: the table's lookup() returned no column(s) {missing}; "
            f"it returned {found.columns}"
        )
    return (
        found.select(
            pl.col(key).cast(key_dtype, strict=False).alias(LOOKUP_KEY),
            *(pl.col(c).cast(schema[c], strict=False) for c in node.columns),
        )
        .filter(pl.col(LOOKUP_KEY).is_not_null())
        .unique(subset=LOOKUP_KEY, keep="first", maintain_order=True)
    )


def join_found(left: pl.LazyFrame, right: pl.DataFrame, on: str) -> pl.LazyFrame:
    """Left join of ``left`` with ``right`` (from :func:`right_side`), left order kept."""
    return left.join(
        right.lazy(),
        left_on=on,
        right_on=LOOKUP_KEY,
        how="left",
        maintain_order="left",
        coalesce=True,
    )
