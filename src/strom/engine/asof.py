"""The as-of join both backends share: each event joined to the latest feature row available at
its time (see :class:`~strom.pipeline.plan.AsofJoinNode` for the semantics).

Backends differ only in which rows they hand :func:`asof_frames`: the bounded runner both whole
inputs; the streaming runtime the events the watermark has passed, against the feature rows it
holds (every on-time row that can still be the answer; see :mod:`strom.runtime.asof_join`).
Both sides carry their event time in epoch ms as :data:`AT`.
"""

from __future__ import annotations

import polars as pl

from strom.pipeline.plan import AsofJoinNode

AT = "__strom_at"
"""A row's event time in epoch ms (Int64): an event's time, or when a feature row became
available."""


def usable_features(node: AsofJoinNode, features: pl.DataFrame) -> pl.DataFrame:
    """The feature rows that can be an answer, sorted by :data:`AT` (stable): rows with a null
    key never match, and of rows with equal keys and time only the last counts."""
    keys = list(node.right_on)
    return (
        features.drop_nulls(keys)
        .unique([*keys, AT], keep="last", maintain_order=True)
        .sort(AT, maintain_order=True)
    )


def asof_frames(
    node: AsofJoinNode,
    events: pl.DataFrame,
    features: pl.DataFrame,
    left_columns: list[str],
    right_names: dict[str, str],
) -> pl.DataFrame:
    """Every row of ``events``, ordered by :data:`AT` (ties in input order), with the
    ``right_names`` columns (renamed) of the latest row of ``features`` whose keys are equal and
    whose :data:`AT` is at most the event's, within ``node.ttl_ms``; nulls if there is none.
    Output columns: ``left_columns``, then the renamed right columns."""
    keys = [f"__strom_key{i}" for i in range(len(node.right_on))]
    right = usable_features(node, features).select(
        *(pl.col(c).alias(k) for c, k in zip(node.right_on, keys, strict=True)),
        *(pl.col(c).alias(name) for c, name in right_names.items()),
        AT,
    )
    left = events.sort(AT, maintain_order=True)
    joined = left.join_asof(
        right,
        on=AT,
        by_left=list(node.left_on),
        by_right=keys,
        strategy="backward",
        tolerance=node.ttl_ms,
        check_sortedness=False,
    )
    return joined.select(*left_columns, *right_names.values())
