"""Session cutting: which events of a key fall in one session, the same in every backend.

The bounded runner cuts a whole input at once; the streaming runtime cuts each batch into
*mini-sessions* and merges them with the sessions it holds (a late event can bridge two). Both
use :func:`cut_sessions`, so a session is the same set of events whichever way it was built.
"""

from __future__ import annotations

from typing import TypeVar

import polars as pl

from strom.engine.constants import SESSION, TS

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


def cut_sessions(df: Frame, keys: tuple[str, ...], gap_ms: int, order: list[str]) -> Frame:
    """Sort by keys then ``order`` (whose first column is :data:`~strom.engine.constants.TS`)
    and number the sessions in column :data:`~strom.engine.constants.SESSION` (numbers are
    unique across keys). A session starts at a key's first row and at a row ``gap_ms`` or more
    after the previous one; comparing each row with the one before it (no window expression
    over the keys, which Polars evaluates per group: minutes for a million keys)."""
    by = [*keys, *order]
    breaks = pl.col(TS) - pl.col(TS).shift(1) >= gap_ms
    if keys:
        same_key = pl.all_horizontal(pl.col(k).eq_missing(pl.col(k).shift(1)) for k in keys)
        breaks = ~same_key | breaks
    mini = breaks.fill_null(True).cast(pl.Int64).cum_sum()
    return df.sort(by).with_columns(mini.alias(SESSION))
