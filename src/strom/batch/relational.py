"""The map and reduce sides of the local engine's joins, top-k and distinct.

Each reduce side runs the single-process runner's own definition
(:mod:`strom.engine.relational`) over the rows its buckets hold, and each map side ships only
rows that can be in the result, so a bucket's result is that definition's over the whole input,
restricted to the bucket's keys:

- **Join**: both inputs bucketed by the join key (a left key and the right key it equals share a
  bucket: :mod:`strom.batch.shuffle` hashes values, not names), or a small input read whole by
  every map task of the other (:func:`broadcast_join`, :mod:`strom.batch.broadcast`). A right
  row with a null key matches nothing, so it is not shipped; nor, for inner and semi joins, a
  left one; semi and anti joins ship only the right side's distinct keys.
- **Top-k**: each map task keeps its own first ``k`` rows (a row beyond them has ``k`` rows of its
  task before it, so it is not among the first ``k`` of all); one reduce task merges them.
- **Distinct**: each map task keeps the first row of each value; rows are bucketed by that value
  and a reduce task keeps, per value, the row first in input order.

Input order is the single-process runner's: the branches in plan order (a union's inputs in
turn), then each source partition, then the row's position in it, carried as the columns
:data:`BRANCH`, :data:`~strom.engine.constants.PART` and :data:`~strom.engine.constants.SEQ`
(:data:`~strom.batch.tasks.SEQ_FILE_SHIFT`) and dropped from the results; over an aggregation's
results, its key columns come before the position (the stage's ``tiebreak``:
:mod:`strom.batch.planner`). The full sort's map and reduce sides are in :mod:`strom.batch.sort`.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from strom.batch.planner import DistinctStage, JoinStage, SortStage, TopKStage
from strom.batch.tasks import SEQ_FILE_SHIFT, FileInput
from strom.engine.constants import PART, SEQ
from strom.engine.relational import equi_join

BRANCH = "__strom_branch"
ORDER = (BRANCH, PART, SEQ)
"""The columns of input order the map tasks add (dropped from the results)."""

Ordered = TopKStage | SortStage | DistinctStage


def input_order(stage: Ordered) -> list[str]:
    """The columns that order the stage's rows as its input is ordered (ascending, nulls
    first): no two rows are equal in them."""
    return [BRANCH, *stage.tiebreak, PART, SEQ]


def sort_order(stage: TopKStage | SortStage) -> tuple[list[str], list[bool], list[bool]]:
    """The sort's columns, then input order: (columns, descending, nulls_last) for
    ``DataFrame.sort``, a total order."""
    node = stage.node
    after = [c for c in input_order(stage) if c not in node.by]  # equal among ties anyway
    columns = [*node.by, *after]
    descending = [*node.descending, *(False for _ in after)]
    nulls_last = [*(node.nulls_last for _ in node.by), *(False for _ in after)]
    return columns, descending, nulls_last


def with_input_order(lf: pl.LazyFrame, branch: int, first: FileInput) -> pl.LazyFrame:
    """A map task's rows with the columns of :data:`ORDER`."""
    seq = pl.int_range(pl.len(), dtype=pl.Int64) + (first.file_index << SEQ_FILE_SHIFT)
    return lf.with_columns(
        pl.lit(branch, pl.Int64).alias(BRANCH),
        pl.lit(first.partition, pl.Int64).alias(PART),
        seq.alias(SEQ),
    )


def join_rows(stage: JoinStage, side: int, lf: pl.LazyFrame) -> tuple[int, pl.DataFrame]:
    """The task's rows (how many were read, and those the join needs) of input ``side``."""
    frame = lf.collect(engine="streaming")
    keys = list(stage.side_keys(side))
    how = stage.node.how
    if side == 1:
        # a null key matches nothing (any of several key columns null): such a right row is
        # in no join's result; semi and anti joins only ask whether a key exists
        kept = frame.drop_nulls(keys)
        if how in ("semi", "anti"):
            kept = kept.select(keys).unique(maintain_order=True)
    elif how in ("inner", "semi"):
        kept = frame.drop_nulls(keys)  # an unmatched left row is not in these results
    else:
        kept = frame
    return frame.height, kept


def join_bucket(
    stage: JoinStage, frames: Sequence[pl.DataFrame], sides: Sequence[int]
) -> pl.DataFrame:
    """The join of the buckets' left rows with their right rows (every row of a key meets in
    its bucket), left order kept, so each attempt writes the same rows in the same order."""
    node = stage.node
    right_schema = stage.right_schema
    if node.how in ("semi", "anti"):
        right_schema = pl.Schema({k: right_schema[k] for k in node.right_on})
    left = _concat([f for f, s in zip(frames, sides, strict=True) if s == 0], stage.left_schema)
    right = _concat([f for f, s in zip(frames, sides, strict=True) if s == 1], right_schema)
    return equi_join(node, left, right, list(stage.left_schema), stage.renamed, node.how)


def broadcast_join(
    stage: JoinStage, side: int, lf: pl.LazyFrame, broadcast: Sequence[tuple[int, pl.LazyFrame]]
) -> pl.DataFrame:
    """A broadcast join's map task (:mod:`strom.batch.broadcast`): its own rows of input
    ``side`` joined with every row of the other input (``broadcast``: each branch's side and
    rows), the shipped rows of each as :func:`join_rows` keeps them."""
    frames = [join_rows(stage, side, lf)[1]]
    sides = [side]
    for other, rows in broadcast:
        frames.append(join_rows(stage, other, rows)[1])
        sides.append(other)
    return join_bucket(stage, frames, sides)


def ordered_rows(
    stage: TopKStage | DistinctStage, lf: pl.LazyFrame, branch: int, first: FileInput
) -> tuple[int, pl.DataFrame]:
    """The task's rows (how many were read, and those the stage needs) with their order key."""
    lf = with_input_order(lf, branch, first)
    rows = pl.len().alias("__strom_rows")
    if isinstance(stage, TopKStage):
        kept = _top_k(stage, lf)
    else:
        kept = lf.unique(subset=stage.subset, keep="first", maintain_order=True)
    read, frame = pl.collect_all([lf.select(rows), kept])
    return int(read.item()), frame


def ordered_bucket(stage: TopKStage | DistinctStage, frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The stage's result over the buckets' rows (in input order within it)."""
    order_schema = {c: pl.Int64() for c in ORDER}
    every = _concat(frames, pl.Schema({**stage.schema, **order_schema})).lazy()
    if isinstance(stage, TopKStage):
        out = _top_k(stage, every)
    else:
        out = every.sort(input_order(stage)).unique(
            subset=stage.subset, keep="first", maintain_order=True
        )
    return out.drop(ORDER).collect()


def _top_k(stage: TopKStage, lf: pl.LazyFrame) -> pl.LazyFrame:
    """``lf``'s first ``k`` rows by the sort's columns, then input order (ties)."""
    assert stage.node.limit is not None
    columns, descending, nulls_last = sort_order(stage)
    return lf.sort(columns, descending=descending, nulls_last=nulls_last).head(stage.node.limit)


def _concat(frames: Sequence[pl.DataFrame], schema: pl.Schema) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="vertical")
