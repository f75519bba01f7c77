"""Plans are validated before anything runs, with errors that name the step and the fix."""

from __future__ import annotations

import re

import polars as pl
import pytest

from strom.connectors import MemorySink, MemorySource
from strom.engine.aggregation import Agg
from strom.pipeline import Pipeline, PlanError, Tumbling, agg


def _source() -> MemorySource:
    return MemorySource([[[{"ts": 1, "k": "a", "v": 1.0}]]])


def test_no_sink() -> None:
    with pytest.raises(PlanError, match="no sink"):
        Pipeline().plan()


def test_unknown_column_in_expression() -> None:
    p = Pipeline()
    p.source(_source(), timestamp="ts").filter(pl.col("temp") > 1).sink(MemorySink())
    with pytest.raises(PlanError, match=r"Filter: .*temp.*available columns: \['ts', 'k', 'v'\]"):
        p.plan()


def test_non_boolean_filter() -> None:
    p = Pipeline()
    p.source(_source()).filter(pl.col("v") + 1).sink(MemorySink())
    with pytest.raises(PlanError, match="Boolean"):
        p.plan()


def test_window_without_timestamp() -> None:
    p = Pipeline()
    p.source(_source()).key_by("k").window(Tumbling(10)).agg(agg.count()).sink(MemorySink())
    with pytest.raises(PlanError, match="windows need event time"):
        p.plan()


def test_timestamp_projected_away() -> None:
    p = Pipeline()
    s = p.source(_source(), timestamp="ts").select("k", "v")
    s.key_by("k").window(Tumbling(10)).agg(agg.count()).sink(MemorySink())
    with pytest.raises(PlanError, match="windows need event time"):
        p.plan()


def test_unknown_timestamp_key_and_aggregated_columns() -> None:
    p = Pipeline()
    p.source(_source(), timestamp="time").sink(MemorySink())
    with pytest.raises(PlanError, match="timestamp column 'time' is not in"):
        p.plan()
    p = Pipeline()
    p.source(_source(), timestamp="ts").key_by("device").sink(MemorySink())
    with pytest.raises(PlanError, match="key column 'device' does not exist"):
        p.plan()
    p = Pipeline()
    s = p.source(_source(), timestamp="ts").key_by("k").window(Tumbling(10))
    s.agg(agg.max("temp")).sink(MemorySink())
    with pytest.raises(PlanError, match="aggregated column 'temp' does not exist"):
        p.plan()


@pytest.mark.parametrize(
    ("spec", "dtype", "reason"),
    [
        (agg.sum("v"), pl.String, "agg.sum() needs a numeric or Boolean column, not String"),
        (agg.mean("v"), pl.Date, "agg.mean() needs a numeric or Boolean column, not Date"),
        (agg.std("v"), pl.String, "agg.std() needs a numeric"),
        (agg.approx_quantile("v", 0.5), pl.String, "agg.approx_quantile() needs a numeric"),
        (agg.max("v"), pl.List(pl.Int64), "agg.max() needs a column of ordered values"),
    ],
)
def test_aggregation_of_a_column_of_the_wrong_type(
    spec: Agg, dtype: pl.DataType, reason: str
) -> None:
    schema = pl.Schema({"ts": pl.Int64, "k": pl.String, "v": dtype})
    source = MemorySource([[schema.to_frame()]], schema=schema)
    p = Pipeline()
    p.source(source, timestamp="ts").key_by("k").window(Tumbling(10)).agg(spec).sink(MemorySink())
    with pytest.raises(PlanError, match=re.escape(reason) + ".*column 'v'"):
        p.plan()


def test_aggregations_accept_the_types_they_can_compute() -> None:
    schema = {"ts": pl.Int64, "k": pl.String, "s": pl.String, "b": pl.Boolean, "d": pl.Date}
    source = MemorySource([[pl.Schema(schema).to_frame()]], schema=pl.Schema(schema))
    p = Pipeline()
    w = p.source(source, timestamp="ts").key_by("k").window(Tumbling(10))
    w.agg(agg.max("s"), agg.min("d"), agg.sum("b"), agg.count_distinct("s"), agg.first("s")).sink(
        MemorySink()
    )
    p.plan()


def test_duplicate_output_names_and_bad_specs() -> None:
    p = Pipeline()
    s = p.source(_source(), timestamp="ts").key_by("k").window(Tumbling(10))
    s.agg(agg.sum("v"), agg.sum("v")).sink(MemorySink())
    with pytest.raises(PlanError, match="both produce column 'sum_v'"):
        p.plan()
    with pytest.raises(ValueError, match="size_ms must be a positive integer"):
        Tumbling(0)
    with pytest.raises(NotImplementedError, match=r"agg\.quantile \(exact\) is not implemented"):
        agg.quantile("v", 0.5)


@pytest.mark.parametrize("key", ["window_start", "window_end", "is_update"])
def test_key_named_like_a_window_column(key: str) -> None:
    source = MemorySource([[[{"ts": 1, key: 0}]]])
    p = Pipeline()
    p.source(source, timestamp="ts").key_by(key).window(Tumbling(10)).agg(agg.count()).sink(
        MemorySink()
    )
    with pytest.raises(PlanError, match=f"key column '{key}' clashes"):
        p.plan()


def test_valid_plan_knows_output_schema() -> None:
    p = Pipeline()
    out = (
        p.source(_source(), timestamp="ts")
        .key_by("k")
        .window(Tumbling(10))
        .agg(agg.count(), agg.mean("v"), agg.first("k"))
    )
    out.sink(MemorySink())
    plan = p.plan()
    assert dict(plan.schemas[out.node] or {}) == {
        "k": pl.String(),
        "window_start": pl.Int64(),
        "window_end": pl.Int64(),
        "count": pl.Int64(),
        "mean_v": pl.Float64(),
        "first_k": pl.String(),
        "is_update": pl.Boolean(),
    }


def test_module_docstring_examples_run() -> None:
    import doctest

    import strom.pipeline

    result = doctest.testmod(strom.pipeline, raise_on_error=True)
    assert result.attempted > 0
