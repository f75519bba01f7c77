"""The local engine's full sort (a sort without a limit): sorted runs, ranges cut at sampled
rows, one reduce task per range, output files in order.

1. Each map task sorts its own rows (a map task's input at most, as for every map task) by the
   sort's columns, then input order (:func:`~strom.batch.relational.sort_order`: a total order,
   no two rows equal in it), writes them as one run (an Arrow IPC shuffle file) and returns an
   evenly spaced sample of the run, each sampled row weighted by the rows it stands for.
2. The driver sorts the samples and cuts them into ranges of about equal weight
   (:func:`bounds`): range ``i`` holds the rows from bound ``i`` (included) to bound ``i + 1``
   (excluded), the bounds being sampled rows, so equal sort values are split by input order and
   even a single hot value is spread over several ranges.
3. Reduce task ``i`` scans every run (memory-mapped, lazily), keeps the rows of its range
   (:func:`in_range`: a lexicographic comparison with its bounds that follows Polars' sort
   order: descending per column, nulls first or last, NaN above every number) and sorts them.

Its output holds about ``1/N`` of the rows, and the reduce tasks' files are published in range
order (``part-00000`` < ``part-00001`` …), so read in order they are the single-process
runner's result, ties included. Why not one reduce task, as top-k has: it would hold the whole
input. Why not a merge of the runs in one task: one process would write the whole result.
Every task holds one task's input or one range at most, which the driver sizes from the runs'
bytes, as it sizes any reduce task. The cost: each range task scans every run (a vectorized
filter over memory-mapped files), so the bytes scanned grow as ranges x runs; skipping the parts
of a run outside a range (runs written in chunks, the chunks' first rows as the sample) is not
done yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from strom.batch.planner import SortStage
from strom.batch.relational import ORDER, sort_order, with_input_order
from strom.batch.tasks import FileInput

SAMPLE = 256
"""Rows sampled from each run (evenly spaced)."""
WEIGHT = "__strom_weight"


def sorted_run(
    stage: SortStage, lf: pl.LazyFrame, branch: int, first: FileInput
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The task's rows in the sort's order (with their input order), and their sample."""
    columns, descending, nulls_last = sort_order(stage)
    run = (
        with_input_order(lf, branch, first)
        .sort(columns, descending=descending, nulls_last=nulls_last)
        .collect()
    )
    take = min(run.height, SAMPLE)
    positions = (np.arange(take, dtype=np.int64) * run.height) // max(take, 1)
    sample = run.select(columns)[positions]
    weight = run.height / take if take else 0.0
    return run, sample.with_columns(pl.lit(weight, pl.Float64).alias(WEIGHT))


def bounds(stage: SortStage, samples: Sequence[pl.DataFrame], ranges: int) -> list[Any]:
    """``ranges + 1`` bounds (one-row frames; None: unbounded) cutting the sampled rows into
    ranges of about equal weight (fewer when the samples are fewer)."""
    columns, descending, nulls_last = sort_order(stage)
    every = pl.concat(samples, how="vertical").sort(
        columns, descending=descending, nulls_last=nulls_last
    )
    cumulative = every.get_column(WEIGHT).cum_sum().to_numpy()
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    picks: list[int] = []
    for i in range(1, ranges):
        position = int(np.searchsorted(cumulative, total * i / ranges, side="left"))
        # a bound is a sampled row, every one after the first (rows are distinct in the order)
        if 0 < position < every.height and (not picks or position > picks[-1]):
            picks.append(position)
    rows = [every[p : p + 1].drop(WEIGHT) for p in picks]
    return [None, *rows, None]


def in_range(stage: SortStage, low: pl.DataFrame | None, high: pl.DataFrame | None) -> pl.Expr:
    """Rows at or after ``low`` and before ``high`` in the sort's order."""
    keep = pl.lit(True)
    if low is not None:
        keep = keep & ~_before(stage, low)
    if high is not None:
        keep = keep & _before(stage, high)
    return keep


def _before(stage: SortStage, bound: pl.DataFrame) -> pl.Expr:
    """Rows strictly before the row ``bound`` in the sort's order (a lexicographic comparison:
    each column decides unless equal)."""
    columns, descending, nulls_last = sort_order(stage)
    earlier: pl.Expr = pl.lit(False)  # equal in every column: not before
    for name, down, last in reversed(list(zip(columns, descending, nulls_last, strict=True))):
        value = bound.get_column(name)[0]
        column = pl.col(name)
        if value is None:
            precedes = column.is_not_null() if last else pl.lit(False)
            equal = column.is_null()
        else:
            literal = pl.lit(value, dtype=bound.schema[name])
            smaller = column > literal if down else column < literal
            precedes = pl.when(column.is_null()).then(pl.lit(not last)).otherwise(smaller)
            equal = (column == literal).fill_null(False)
        earlier = precedes | (equal & earlier)
    return earlier


def range_rows(
    stage: SortStage, runs: Sequence[str], low: pl.DataFrame | None, high: pl.DataFrame | None
) -> pl.DataFrame:
    """The rows of ``runs`` in the range [``low``, ``high``), sorted, without the input-order
    columns."""
    columns, descending, nulls_last = sort_order(stage)
    if not runs:
        return pl.DataFrame(schema=stage.schema)
    lf = pl.concat([pl.scan_ipc(path) for path in runs], how="vertical")
    out = lf.filter(in_range(stage, low, high)).sort(
        columns, descending=descending, nulls_last=nulls_last
    )
    return out.drop(ORDER).collect()
