"""Output column names of aggregations: defaults, ``name=``, ``.alias()``, validation, and both
executors honouring them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from strom.bounded import run_bounded
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Agg, Pipeline, PlanError, Session, Tumbling, WindowSpec, agg
from strom.runtime import latest, run_streaming

FACTORIES: list[tuple[Callable[..., Agg], tuple[Any, ...], str]] = [
    (agg.count, (), "count"),
    (agg.count, ("v",), "count_v"),
    (agg.sum, ("v",), "sum_v"),
    (agg.mean, ("v",), "mean_v"),
    (agg.min, ("v",), "min_v"),
    (agg.max, ("v",), "max_v"),
    (agg.first, ("v",), "first_v"),
    (agg.last, ("v",), "last_v"),
    (agg.var, ("v",), "var_v"),
    (agg.std, ("v",), "std_v"),
    (agg.count_distinct, ("v",), "count_distinct_v"),
    (agg.approx_count_distinct, ("v",), "approx_count_distinct_v"),
    (agg.approx_quantile, ("v", 0.5), "q50_v"),
]
IDS = [default for _, _, default in FACTORIES]
SCHEMA = pl.Schema({"ts": pl.Int64(), "k": pl.String(), "v": pl.Int64()})
ROWS = [
    {"ts": 1_000, "k": "a", "v": 4},
    {"ts": 2_500, "k": "b", "v": 9},
    {"ts": 3_000, "k": "a", "v": None},
    {"ts": 12_000, "k": "a", "v": 1},
    {"ts": 12_100, "k": "b", "v": 5},
    {"ts": 30_000, "k": "a", "v": 8},
]


@pytest.mark.parametrize(("factory", "args", "default"), FACTORIES, ids=IDS)
def test_default_name_name_and_alias(
    factory: Callable[..., Agg], args: tuple[Any, ...], default: str
) -> None:
    plain = factory(*args)
    assert plain.name == default
    named = factory(*args, name="custom")
    aliased = plain.alias("custom")
    assert named == aliased
    assert named.name == "custom" and named.column == plain.column
    assert plain.name == default  # alias() returns a new aggregation
    assert type(aliased) is type(plain)


@pytest.mark.parametrize("bad", ["", 3, None])
def test_output_name_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(TypeError, match="output name must be a non-empty string"):
        agg.mean("v").alias(bad)  # type: ignore[arg-type]
    if bad is not None:  # name=None means the default name
        with pytest.raises(TypeError, match="output name must be a non-empty string"):
            agg.sum("v", name=bad)  # type: ignore[arg-type]


def _plan(*aggs: Agg, keys: tuple[str, ...] = ("k",)) -> Pipeline:
    p = Pipeline()
    stream = p.source(MemorySource([[ROWS]], schema=SCHEMA), timestamp="ts")
    stream.key_by(*keys).window(Tumbling(10_000)).agg(*aggs).sink(MemorySink())
    return p


def test_duplicate_output_names_are_rejected_naming_both() -> None:
    p = _plan(agg.mean("v", name="x"), agg.max("v").alias("x"))
    with pytest.raises(PlanError, match=r"Mean\(column='v', name='x'\) and Max\(.*both produce"):
        p.plan()
    p = _plan(agg.sum("v", name="max_v"), agg.max("v"))
    with pytest.raises(PlanError, match="both produce column 'max_v'"):
        p.plan()


def test_output_name_clashing_with_a_key_is_rejected() -> None:
    with pytest.raises(PlanError, match="column 'k', which is a key column"):
        _plan(agg.count(name="k")).plan()


@pytest.mark.parametrize("column", ["window_start", "window_end", "is_update"])
def test_output_name_clashing_with_a_window_column_is_rejected(column: str) -> None:
    with pytest.raises(PlanError, match=f"column '{column}', one of the window's own columns"):
        _plan(agg.max("v").alias(column)).plan()


def _run(spec: WindowSpec, runner: Callable[[Pipeline], object]) -> pl.DataFrame:
    aggs = (
        agg.count(name="n"),
        agg.sum("v", name="max_v"),  # names that are other aggregations' defaults
        agg.max("v", name="sum_v"),
        agg.mean("v").alias("avg"),
        agg.first("v").alias("opening"),
        agg.approx_quantile("v", 0.5, name="median"),
        agg.count_distinct("v").alias("distinct"),
    )
    p = Pipeline()
    stream = p.source(MemorySource([[ROWS[:3], ROWS[3:]]], schema=SCHEMA), timestamp="ts")
    out = stream.key_by("k").window(spec).agg(*aggs)
    out.sink(sink := MemorySink())
    schema = p.plan().schemas[out.node]
    expected = ["k", "window_start", "window_end", "n", "max_v", "sum_v", "avg", "opening"]
    expected += ["median", "distinct", "is_update"]
    assert schema is not None and schema.names() == expected
    runner(p)
    frame = sink.to_frame()
    assert frame.columns == expected
    return latest(frame, ["k"]).sort("window_start", "k")


@pytest.mark.parametrize("spec", [Tumbling(10_000), Session(2_500)], ids=["tumbling", "session"])
def test_both_executors_honour_output_names(spec: WindowSpec) -> None:
    streamed, bounded = _run(spec, run_streaming), _run(spec, run_bounded)
    assert_frame_equal(streamed, bounded)
    first = streamed.row(0, named=True)
    assert (first["k"], first["n"], first["max_v"], first["sum_v"]) == ("a", 2, 4, 4)
    b = streamed.filter(pl.col("k") == "b").row(0, named=True)
    assert (b["max_v"], b["sum_v"], b["avg"], b["opening"]) == (9, 9, 9.0, 9)
