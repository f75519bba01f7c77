"""The native expression subset: every construct computes exactly what Polars computes (on
values chosen for their edges: nulls, NaN, signs, Int64 overflow), and everything outside it
is left to mapInArrow."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

pytest.importorskip("pyspark", reason="Spark tests need pyspark: pip install 'strom[spark]'")

SCHEMA = pl.Schema(
    {"i": pl.Int64(), "j": pl.Int64(), "f": pl.Float64(), "b": pl.Boolean(), "s": pl.String()}
)
ROWS = {
    "i": [1, -3, None, 2**63 - 1, 0, 7],
    "j": [2, 5, 4, 1, None, -7],
    "f": [1.5, math.nan, None, -0.25, math.inf, 2.0],
    "b": [True, False, None, True, False, None],
    "s": ["a", "b", None, "ä", "", "b"],
}

NATIVE = {
    "add": pl.col("i") + pl.col("j"),
    "overflow": pl.col("i") + 1,
    "mixed": pl.col("i") * 2.5 - pl.col("f"),
    "neg": -pl.col("f"),
    "abs": pl.col("j").abs(),
    "eq": pl.col("f") == pl.col("f"),
    "nan_gt": pl.col("f") > 1.0,
    "cmp_mixed": pl.col("i") <= pl.col("f"),
    "str_lt": pl.col("s") < "b",
    "str_ne": pl.col("s") != pl.col("s"),
    "logic": (pl.col("b") & (pl.col("i") > 0)) | ~pl.col("b"),
    "null": pl.col("i").is_null(),
    "not_null": pl.col("s").is_not_null(),
    "fill": pl.col("j").fill_null(0),
    "fill_f": pl.col("f").fill_null(1),
    "when": pl.when(pl.col("f") > 0).then(pl.col("i")).otherwise(pl.col("j")),
    "when_lit": pl.when(pl.col("b")).then(pl.lit("yes")),
    "when_num": pl.when(pl.col("b")).then(1).otherwise(pl.col("f")),
    "cast": pl.col("i").cast(pl.Float64) + pl.col("b").cast(pl.Int64),
    "lit": pl.lit(5) + pl.col("j"),
}
NOT_NATIVE = {
    "divide": pl.col("i") / pl.col("j"),
    "floordiv": pl.col("i") // 2,
    "modulo": pl.col("i") % 2,
    "string": pl.col("s").str.to_uppercase(),
    "cast_may_fail": pl.col("s").cast(pl.Int64),
    "str_plus": pl.col("s") + pl.col("s"),
    "bit_not": ~pl.col("i"),
}


def test_the_serialized_trees_are_pinned_to_the_tested_polars_version() -> None:
    from strom.spark.exprs import POLARS_TESTED

    assert pl.__version__.startswith(POLARS_TESTED + "."), (
        f"strom.spark.exprs reads Polars {POLARS_TESTED}'s expression trees; check them against "
        f"Polars {pl.__version__} (this test file) and update POLARS_TESTED"
    )


def test_the_native_subset_equals_polars(spark: Any) -> None:
    from strom.spark.exprs import native_column
    from strom.spark.types import spark_schema, to_polars

    frame = pl.DataFrame(ROWS, schema=SCHEMA)
    df = spark.createDataFrame(frame.to_arrow(), spark_schema(SCHEMA, "test"))
    columns = {}
    for name, expr in NATIVE.items():
        column = native_column(expr.alias(name), SCHEMA)
        assert column is not None, f"{name}: {expr} should be lowered natively"
        columns[name] = column
    expected = frame.select(e.alias(n) for n, e in NATIVE.items())
    got = to_polars(df.select(*columns.values()).toArrow(), expected.schema)
    assert_frame_equal(got, expected)


@pytest.mark.parametrize("name", sorted(NOT_NATIVE))
def test_what_differs_is_left_to_polars(spark: Any, name: str) -> None:
    from strom.spark.exprs import native_column

    assert native_column(NOT_NATIVE[name], SCHEMA) is None


def test_other_column_types_are_left_to_polars(spark: Any) -> None:
    from strom.spark.exprs import native_column

    schema = pl.Schema({"x": pl.Int32(), "d": pl.Datetime()})
    assert native_column(pl.col("x") + 1, schema) is None
    assert native_column(pl.col("d").is_null(), schema) is None


@pytest.mark.parametrize(
    "expr",
    [
        pl.col("i").sum(),
        pl.col("i") - pl.col("i").mean(),
        pl.col("i").shift(1),
        pl.col("i").cum_sum(),
        pl.col("i").rank(),
        pl.col("i").over("s"),
        pl.col("i").rolling_mean(2),
        pl.col("i").forward_fill(),
        pl.int_range(pl.len()),
    ],
    ids=str,
)
def test_batch_dependent_expressions_are_named(expr: pl.Expr) -> None:
    from strom.spark.exprs import batch_dependent

    assert batch_dependent(expr) is not None


@pytest.mark.parametrize(
    "expr", [pl.col("i") / 2, pl.col("s").str.len_chars(), pl.when(pl.col("b")).then(1)], ids=str
)
def test_row_wise_expressions_pass(expr: pl.Expr) -> None:
    from strom.spark.exprs import batch_dependent

    assert batch_dependent(expr) is None
