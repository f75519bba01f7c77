"""The key a keyed operator's state index holds for a row: one definition for every operator
and runner, so that the same rows are one key everywhere, as they are one group to Polars'
``group_by`` (NaN included: NaN != NaN, so each NaN would be a new dict key; one shared NaN
object is found by identity instead)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

__all__ = ["key_value", "row_keys"]

_NAN = float("nan")


def key_value(value: Any) -> Any:
    """``value`` as a key: the shared NaN for any NaN, else itself."""
    return _NAN if isinstance(value, float) and value != value else value


def row_keys(frame: pl.DataFrame, names: Sequence[str]) -> list[Any]:
    """Each row's key: its value for one key column, a tuple of values for several, ``()`` for
    none (:func:`key_value` of each). One integer column without nulls goes through NumPy (the
    same ints, made faster)."""
    if not names:
        return [()] * frame.height
    columns = []
    for name in names:
        column = frame.get_column(name)
        if len(names) == 1 and column.dtype.is_integer() and not column.null_count():
            return list(column.to_numpy().tolist())
        values = column.to_list()
        if column.dtype.is_float():
            values = [_NAN if v != v else v for v in values]
        columns.append(values)
    if len(columns) == 1:
        return columns[0]
    return list(zip(*columns, strict=True))
