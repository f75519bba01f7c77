"""The prepared stateless transforms (``compile_transform``) behave exactly as Polars' own
``select``: the bare-column fast path included (same frame, same errors)."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from strom.connectors.memory import MemorySource
from strom.engine.transforms import compile_transform
from strom.pipeline.plan import SelectNode, SourceNode

FRAME = pl.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"], "c": [0.5, 1.5, 2.5]})


def _select(*exprs: pl.Expr) -> SelectNode:
    source = SourceNode(MemorySource([[FRAME]]), None)
    return SelectNode(source, tuple(exprs))


@pytest.mark.parametrize(
    "exprs",
    [
        (pl.col("b"), pl.col("a")),  # the fast path: bare columns, reordered
        (pl.col("c"),),
        (pl.col("a").alias("z"), pl.col("b")),  # renamed: a query
        (pl.col("a") * 2, pl.col("c")),
        (pl.all(),),
    ],
)
@pytest.mark.parametrize("height", [3, 0])
def test_select_equals_polars(exprs: tuple[pl.Expr, ...], height: int) -> None:
    frame = FRAME.head(height)
    got = compile_transform(_select(*exprs))(frame)
    assert_frame_equal(got, frame.select(*exprs))


@pytest.mark.parametrize(
    ("exprs", "error"),
    [
        ((pl.col("missing"),), pl.exceptions.ColumnNotFoundError),
        ((pl.col("a"), pl.col("a")), pl.exceptions.DuplicateError),
    ],
)
def test_select_errors_equal_polars(exprs: tuple[pl.Expr, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        FRAME.select(*exprs)
    with pytest.raises(error):
        compile_transform(_select(*exprs))(FRAME)
