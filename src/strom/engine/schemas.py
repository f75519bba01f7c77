"""Output schemas of the window nodes, as every backend produces them.

Validation computes them from the declared input schema; executors from the input frames they
see (the same function, so a plan's declared schema is the one it runs with).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from strom.engine.aggregation import Agg
from strom.engine.constants import IS_UPDATE, WINDOW_END, WINDOW_START


def window_schema(keys: Sequence[str], aggs: Sequence[Agg], input_schema: pl.Schema) -> pl.Schema:
    """A window's results over inputs of ``input_schema``: the keys, ``window_start``,
    ``window_end`` (Int64 epoch ms), each aggregation's ``name``, then ``is_update``."""
    fields: dict[str, pl.DataType] = {k: input_schema[k] for k in keys}
    fields[WINDOW_START] = pl.Int64()
    fields[WINDOW_END] = pl.Int64()
    for a in aggs:
        fields[a.name] = a.output_dtype(input_schema[a.column] if a.column is not None else None)
    fields[IS_UPDATE] = pl.Boolean()
    return pl.Schema(fields)


def late_schema(input_schema: pl.Schema) -> pl.Schema:
    """A window's late output over inputs of ``input_schema``: each input row, plus the
    ``window_start`` and ``window_end`` of the window it missed."""
    return pl.Schema({**input_schema, WINDOW_START: pl.Int64(), WINDOW_END: pl.Int64()})


def keyed_agg_schema(
    keys: Sequence[str], aggs: Sequence[Agg], input_schema: pl.Schema
) -> pl.Schema:
    """A keyed aggregation's results (no window): the keys, each aggregation's ``name``, then
    ``is_update``."""
    fields: dict[str, pl.DataType] = {k: input_schema[k] for k in keys}
    for a in aggs:
        fields[a.name] = a.output_dtype(input_schema[a.column] if a.column is not None else None)
    fields[IS_UPDATE] = pl.Boolean()
    return pl.Schema(fields)
