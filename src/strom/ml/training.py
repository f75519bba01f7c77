"""Point-in-time-correct training sets: each label joined to the features known at its time.

:func:`training_set` joins every label row (entity keys, a label time) to the latest feature row
of the same keys that was *available* at the label's time: ``available <= label_time``, where a
window's value becomes available when the window closes (``window_end``, the default
``available`` column). Only windows that ended by the label's time count, so no feature is made
of events at or after the label (the leak of joining on the window's start, or of backfilling
the latest values). A feature row older than ``ttl`` (``label_time - available > ttl``) is too
stale: the label gets nulls, as it does when no row of its keys is available yet.

The join is one vectorized as-of join; the tests check it against a row-by-row reference and
DuckDB's ``ASOF LEFT JOIN``.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from strom.ml.features import LINEAGE
from strom.pipeline.windows import Duration, event_time_ms, to_ms

__all__ = ["FEATURE_TIME", "training_set"]

#: The output column holding when the joined feature row became available (null: none).
FEATURE_TIME = "feature_time"

_ROW = "__strom_label_row"
_AT = "__strom_at"


def training_set(
    labels: pl.DataFrame,
    features: pl.DataFrame,
    *,
    keys: str | Sequence[str],
    label_time: str,
    ttl: Duration,
    available: str = "window_end",
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Every row of ``labels`` (in order) with ``columns`` of ``features`` (default: every
    column but the keys, ``window_start``, ``window_end`` and ``is_update``) as of its time, and
    :data:`FEATURE_TIME`.

    ``label_time`` is integer epoch ms or a Datetime column; ``available`` is integer epoch ms
    (a feature view's ``window_end``). A label with a null time or key joins nothing. A window
    emitted more than once (``is_update`` rows of a streaming run) counts with its last row.
    """
    key_list = [keys] if isinstance(keys, str) else list(keys)
    ttl_ms = to_ms(ttl, "ttl")
    if ttl_ms < 0:
        raise ValueError(f"ttl must be >= 0, not {ttl_ms} ms")
    for frame, what, needed in (
        (labels, "labels", [*key_list, label_time]),
        (features, "features", [*key_list, available]),
    ):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"{what} have no column(s) {missing}; columns: {frame.columns}")
    skip = {*key_list, "window_start", "window_end", "is_update", available, *LINEAGE}
    wanted = [c for c in features.columns if c not in skip] if columns is None else list(columns)
    clash = [c for c in (*wanted, FEATURE_TIME) if c in labels.columns and c not in key_list]
    if clash:
        raise ValueError(f"columns {clash} are in both labels and features; rename one")
    for k in key_list:
        if labels.schema[k] != features.schema[k]:
            raise ValueError(
                f"key {k!r} is {labels.schema[k]} in labels, {features.schema[k]} in features"
            )
    right = (
        features.select(*key_list, pl.col(available).cast(pl.Int64).alias(_AT), *wanted)
        .drop_nulls([*key_list, _AT])
        .unique([*key_list, _AT], keep="last", maintain_order=True)
        .with_columns(pl.col(_AT).alias(FEATURE_TIME))
        .sort(_AT)
    )
    left = labels.with_row_index(_ROW).with_columns(
        event_time_ms(label_time, labels.schema[label_time]).cast(pl.Int64).alias(_AT)
    )
    joinable = left.drop_nulls([*key_list, _AT]).sort(_AT)
    joined = joinable.join_asof(
        right,
        on=_AT,
        by=key_list,
        strategy="backward",
        tolerance=ttl_ms,
        check_sortedness=False,
    )
    unjoinable = left.join(joinable.select(_ROW), on=_ROW, how="anti")
    out = pl.concat([joined, unjoinable], how="diagonal_relaxed").sort(_ROW)
    return out.select(*labels.columns, *wanted, FEATURE_TIME)
