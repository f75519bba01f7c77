"""Point-in-time training data: the as-of join equals a row-by-row reference and DuckDB's
ASOF JOIN, and no label gets a feature made of events at or after its time."""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg, run_bounded, run_streaming
from strom.ml import FeatureView, training_set
from strom.pipeline import Hopping, PlanError

SCHEMA = {"card": pl.String, "amount": pl.Int64, "ts": pl.Int64}
CARDS = ["a", "b", "c"]


def _view(window: Any = None) -> FeatureView:
    return FeatureView(
        "card_spend",
        keys=("card",),
        window=window or Tumbling(10_000),
        aggs=(agg.count(), agg.sum("amount"), agg.max("amount")),
        timestamp="ts",
        input_schema=SCHEMA,
    )


events_st = st.lists(
    st.tuples(st.sampled_from(CARDS), st.integers(1, 100), st.integers(0, 100_000)),
    min_size=0,
    max_size=60,
)
labels_st = st.lists(
    st.tuples(st.one_of(st.sampled_from([*CARDS, "z"]), st.none()), st.integers(-5_000, 130_000)),
    min_size=1,
    max_size=40,
)


def _events(rows: list[tuple[str, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def _labels(rows: list[tuple[str | None, int]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={"card": pl.String, "t": pl.Int64}, orient="row")
    return frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("label_id"))


def _naive(labels: pl.DataFrame, features: pl.DataFrame, ttl: int) -> pl.DataFrame:
    """Row by row: the feature row of the label's card with the largest window_end <= t."""
    out = []
    feats = features.to_dicts()
    for label in labels.to_dicts():
        best: dict[str, Any] | None = None
        for f in feats:
            if label["card"] is None or f["card"] != label["card"]:
                continue
            on_time = f["window_end"] <= label["t"] and label["t"] - f["window_end"] <= ttl
            if on_time and (best is None or f["window_end"] > best["window_end"]):
                best = f
        out.append({**label, "count": best and best["count"],
                    "sum_amount": best and best["sum_amount"],
                    "max_amount": best and best["max_amount"],
                    "feature_time": best and best["window_end"]})  # fmt: skip
    return pl.DataFrame(out, schema=_expected_schema(labels, features))


def _expected_schema(labels: pl.DataFrame, features: pl.DataFrame) -> pl.Schema:
    return pl.Schema({**labels.schema, "count": features.schema["count"],
                      "sum_amount": features.schema["sum_amount"],
                      "max_amount": features.schema["max_amount"],
                      "feature_time": pl.Int64()})  # fmt: skip


def _duckdb(labels: pl.DataFrame, features: pl.DataFrame, ttl: int) -> pl.DataFrame:
    con = duckdb.connect()
    con.register("labels", labels.to_arrow())
    con.register("feats", features.to_arrow())
    query = f"""
        SELECT l.card, l.t, l.label_id,
               CASE WHEN l.t - f.window_end <= {ttl} THEN f.count END AS count,
               CASE WHEN l.t - f.window_end <= {ttl} THEN f.sum_amount END AS sum_amount,
               CASE WHEN l.t - f.window_end <= {ttl} THEN f.max_amount END AS max_amount,
               CASE WHEN l.t - f.window_end <= {ttl} THEN f.window_end END AS feature_time
        FROM labels l ASOF LEFT JOIN feats f ON l.card = f.card AND l.t >= f.window_end
        ORDER BY l.label_id
    """
    got = pl.from_arrow(con.sql(query).to_arrow_table())
    assert isinstance(got, pl.DataFrame)
    return got.cast(dict(_expected_schema(labels, features)))  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_st, labels_st, st.integers(0, 40_000), st.booleans())
def test_training_set_equals_the_reference_and_duckdb(
    events: list[tuple[str, int, int]], labels: list[tuple[str | None, int]], ttl: int, hop: bool
) -> None:
    view = _view(Hopping(10_000, 5_000) if hop else None)
    frame = _events(events)
    features = view.compute_frame([frame.slice(0, len(events) // 2), frame.slice(len(events) // 2)])
    label_frame = _labels(labels)
    got = training_set(label_frame, features, keys="card", label_time="t", ttl=ttl)
    assert got.columns == [
        *label_frame.columns,
        "count",
        "sum_amount",
        "max_amount",
        "feature_time",
    ]
    assert got.equals(_naive(label_frame, features, ttl))
    assert got.equals(_duckdb(label_frame, features, ttl))
    # point in time: every joined value is made of events strictly before the label's time
    for row in got.filter(pl.col("feature_time").is_not_null()).iter_rows(named=True):
        size = 10_000
        start = row["feature_time"] - size
        seen = frame.filter(
            (pl.col("card") == row["card"]) & (pl.col("ts") >= start)
            & (pl.col("ts") < row["feature_time"])
        )  # fmt: skip
        assert seen["ts"].max() < row["t"]  # type: ignore[operator]
        assert seen.height == row["count"] and seen["amount"].sum() == row["sum_amount"]


@settings(max_examples=20, deadline=None)
@given(events_st)
def test_the_view_streaming_equals_the_view_bounded(events: list[tuple[str, int, int]]) -> None:
    view = _view()
    frame = _events(events).sort("ts")
    bounded = view.compute_frame(frame)
    sink = MemorySink()
    p = Pipeline()
    batches = [frame.slice(i, 7) for i in range(0, frame.height, 7)] or [frame]
    view.apply(p.source(MemorySource([batches], schema=frame.schema), timestamp="ts")).sink(sink)
    run_streaming(p)
    order = ["card", "window_start"]
    streamed = sink.to_frame()
    if bounded.height == 0:
        assert streamed.height == 0
        return
    assert streamed.sort(order).equals(bounded.sort(order))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_st, st.integers(0, 40_000))
def test_enrich_streaming_equals_bounded_equals_the_training_set(
    events: list[tuple[str, int, int]], ttl: int
) -> None:
    """The events as their own labels: what ``view.enrich`` serves each event in a stream is
    what ``training_set`` gives it offline."""
    view = _view()
    frame = _events(events).sort("ts").with_columns(pl.int_range(pl.len()).alias("id"))

    def enriched(run: Any) -> pl.DataFrame:
        p = Pipeline()
        batches = [frame.slice(i, 7) for i in range(0, frame.height, 7)] or [frame]
        payments = p.source(MemorySource([batches], schema=frame.schema), timestamp="ts")
        view.enrich(payments, ttl=ttl).sink(sink := MemorySink())
        run(p)
        return sink.to_frame().sort("id") if sink.batches else pl.DataFrame()

    streamed, bounded = enriched(run_streaming), enriched(run_bounded)
    if frame.height == 0:
        assert streamed.height == bounded.height == 0
        return
    assert streamed.equals(bounded)
    offline = training_set(
        frame, view.compute_frame(frame), keys="card", label_time="ts", ttl=ttl
    ).sort("id")
    assert bounded.columns == [*frame.columns, "window_end", *view.feature_names]
    got = bounded.rename({"window_end": "feature_time"}).select(offline.columns)
    assert got.equals(offline)


def test_version_follows_the_definition_and_input_types() -> None:
    base = _view()
    assert base.version == _view().version and len(base.version) == 16
    assert _view(Tumbling(20_000)).version != base.version
    other_type = FeatureView("card_spend", keys=("card",), window=Tumbling(10_000),
                             aggs=base.aggs, timestamp="ts",
                             input_schema={**SCHEMA, "amount": pl.Float64})  # fmt: skip
    assert other_type.version != base.version
    unrelated = FeatureView("card_spend", keys=("card",), window=Tumbling(10_000),
                            aggs=base.aggs, timestamp="ts",
                            input_schema={**SCHEMA, "note": pl.String})  # fmt: skip
    assert unrelated.version == base.version  # a column it does not read changes nothing
    with pytest.raises(PlanError, match=r"reads columns \['amount'\], which input_schema"):
        FeatureView("v", keys=("card",), window=Tumbling(1_000), aggs=(agg.sum("amount"),),
                    timestamp="ts", input_schema={"card": pl.String, "ts": pl.Int64})  # fmt: skip
    p = Pipeline()
    typed = pl.DataFrame({"card": ["a"], "amount": [1.5], "ts": [1]})
    with pytest.raises(PlanError, match=r"column 'amount' is Float64 in the stream, Int64 in"):
        base.apply(p.source(MemorySource([[typed]]), timestamp="ts"))


def test_training_set_bad_input() -> None:
    labels = _labels([("a", 5)])
    features = _view().compute_frame(_events([("a", 1, 1)]))
    with pytest.raises(ValueError, match=r"labels have no column\(s\) \['ts'\]"):
        training_set(labels, features, keys="card", label_time="ts", ttl=1)
    with pytest.raises(ValueError, match="ttl must be >= 0"):
        training_set(labels, features, keys="card", label_time="t", ttl=-1)
    with pytest.raises(ValueError, match=r"columns \['count'\] are in both"):
        training_set(labels.with_columns(count=1), features, keys="card", label_time="t", ttl=1)


def test_the_readme_example_runs() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "ModelStore" in b]
    scope: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), scope)
    out = scope["sink"].to_frame()
    assert out.height == 4 and set(out["model_version"]) == {1}
    assert set(out["feature_version"]) == {scope["view"].version}
    train = scope["train"]  # the 25 s label sees only the window that ended at 20 s
    assert train.filter(pl.col("ts") == 25_000)["feature_time"].to_list() == [20_000]
