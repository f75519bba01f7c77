"""As-of joins: streaming == bounded == DuckDB's ASOF JOIN, late rows, feature views, validation."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.bounded import run_bounded
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, PlanError, Tumbling, agg
from strom.runtime import StreamingExecutor

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVENTS = pl.Schema(
    {"id": pl.Int64(), "k": pl.String(), "g": pl.Int64(), "ts": pl.Int64(), "v": pl.Int64()}
)
FEATURES = pl.Schema(
    {"rid": pl.Int64(), "k": pl.String(), "g": pl.Int64(), "ts": pl.Int64(), "w": pl.Int64()}
)

Rows = list[dict[str, object]]
Partitions = list[list[Rows]]  # partition -> batches -> rows


@dataclass
class Scenario:
    events: Partitions
    features: Partitions
    events_ooo: int
    features_ooo: int
    ttl: int | None
    keys: tuple[str, ...]


@st.composite
def scenarios(draw: st.DrawFn, *, late: bool) -> Scenario:
    """Events and feature rows from 1-3 partitions each, in random micro-batches, out of order
    within each source's bound (or, with ``late``, some far behind). Times are multiples of
    500 ms, so events often sit exactly on a feature row's time or the TTL's edge. Feature rows
    have distinct keys and times (which of two equal ones counts depends on arrival order)."""
    keys = draw(st.sampled_from([("k",), ("k", "g")]))
    ttl = draw(st.sampled_from([None, 0, 1_000, 3_000]))
    ids = itertools.count()
    taken: set[tuple[object, ...]] = set()

    def side(id_column: str, value_column: str, unique: bool) -> tuple[Partitions, int]:
        ooo = 500 * draw(st.integers(0, 4))
        partitions: Partitions = []
        for _ in range(draw(st.integers(1, 3))):
            frontier = 500 * draw(st.integers(-4, 4))
            rows: Rows = []
            for _ in range(draw(st.integers(0, 12))):
                frontier += 500 * draw(st.integers(0, 3))
                back = 500 * draw(st.integers(0, ooo // 500))
                if late and draw(st.integers(0, 4)) == 0:
                    back = 500 * draw(st.integers(0, ooo // 500 + 12))
                row = {
                    id_column: next(ids),
                    "k": draw(st.sampled_from(["a", "a", "b", None])),
                    "g": draw(st.integers(0, 1)),
                    "ts": frontier - back,
                    value_column: draw(st.integers(-50, 50)),
                }
                identity = (*(row[k] for k in keys), row["ts"])
                if unique and identity in taken:
                    continue
                taken.add(identity)
                rows.append(row)
            cuts = sorted(draw(st.sets(st.integers(1, max(1, len(rows) - 1)), max_size=4)))
            bounds = [0, *[c for c in cuts if c < len(rows)], len(rows)]
            partitions.append([rows[a:b] for a, b in itertools.pairwise(bounds) if b > a])
        return partitions, ooo

    events, events_ooo = side("id", "v", unique=False)
    features, features_ooo = side("rid", "w", unique=True)
    return Scenario(events, features, events_ooo, features_ooo, ttl, keys)


@dataclass
class Outputs:
    joined: MemorySink
    late_events: MemorySink
    late_features: MemorySink


def build(s: Scenario, events: Partitions, features: Partitions) -> tuple[Pipeline, Outputs]:
    p = Pipeline()
    ev = p.source(MemorySource(events, schema=EVENTS), timestamp="ts",
                  max_out_of_orderness_ms=s.events_ooo, name="events")  # fmt: skip
    fe = p.source(MemorySource(features, schema=FEATURES), timestamp="ts",
                  max_out_of_orderness_ms=s.features_ooo, name="features")  # fmt: skip
    joined = ev.asof_join(fe, on=s.keys, ttl=s.ttl)
    out = Outputs(MemorySink(), MemorySink(), MemorySink())
    joined.sink(out.joined)
    joined.late_events().sink(out.late_events)
    joined.late_features().sink(out.late_features)
    return p, out


def rows_of(parts: Partitions) -> Rows:
    return [r for batches in parts for batch in batches for r in batch]


def without(parts: Partitions, column: str, ids: set[int]) -> Partitions:
    return [[[r for r in b if r[column] not in ids] for b in batches] for batches in parts]


def frame(sink: MemorySink, schema: pl.Schema) -> pl.DataFrame:
    return pl.concat(sink.batches) if sink.batches else pl.DataFrame(schema=schema)


def output_schema(keys: tuple[str, ...]) -> pl.Schema:
    right = {c + "_right" if c in EVENTS else c: t for c, t in FEATURES.items() if c not in keys}
    return pl.Schema({**EVENTS, **right})


def canonical(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort("id")


def duckdb_reference(s: Scenario, events: Rows, features: Rows) -> pl.DataFrame:
    """``ASOF LEFT JOIN ... ON keys AND e.ts >= f.ts``, then the TTL: a match older than it is
    no match."""
    con = duckdb.connect()
    con.register("e", pl.DataFrame(events, schema=EVENTS).to_arrow())
    con.register("f", pl.DataFrame(features, schema=FEATURES).to_arrow())
    on = " AND ".join([*(f"e.{k} = f.{k}" for k in s.keys), "e.ts >= f.ts"])
    fresh = "TRUE" if s.ttl is None else f"e.ts - f.ts <= {s.ttl}"
    right = [(c, c + "_right" if c in EVENTS else c) for c in FEATURES if c not in s.keys]
    picked = ", ".join(f'CASE WHEN {fresh} THEN f.{c} END AS "{name}"' for c, name in right)
    result = pl.from_arrow(
        con.sql(f"SELECT e.*, {picked} FROM e ASOF LEFT JOIN f ON {on}").to_arrow_table()
    )
    assert isinstance(result, pl.DataFrame)
    if result.height == 0:
        return pl.DataFrame(schema=output_schema(s.keys))
    return canonical(result.cast(dict(output_schema(s.keys))))  # type: ignore[arg-type]


def run_both(s: Scenario) -> tuple[Outputs, pl.DataFrame, pl.DataFrame, Partitions, Partitions]:
    """The streaming run, and the bounded run and DuckDB over the rows it did not find late."""
    p, streamed = build(s, s.events, s.features)
    StreamingExecutor(p, clock=lambda: 0.0).run()
    late_ids = {int(i) for i in frame(streamed.late_events, EVENTS)["id"]}
    late_rids = {int(i) for i in frame(streamed.late_features, FEATURES)["rid"]}
    events, features = without(s.events, "id", late_ids), without(s.features, "rid", late_rids)
    bp, bounded = build(s, events, features)
    run_bounded(bp)
    assert not bounded.late_events.batches and not bounded.late_features.batches
    expected = duckdb_reference(s, rows_of(events), rows_of(features))
    return (
        streamed,
        canonical(frame(bounded.joined, output_schema(s.keys))),
        expected,
        events,
        features,
    )


@SETTINGS
@given(scenarios(late=False))
def test_streaming_equals_bounded_equals_duckdb_asof_join(s: Scenario) -> None:
    streamed, bounded, expected = run_both(s)[:3]
    assert not streamed.late_events.batches and not streamed.late_features.batches  # all on time
    got = canonical(frame(streamed.joined, output_schema(s.keys)))
    event("matched" if got["rid"].null_count() < got.height else "no match")
    assert got.height == len(rows_of(s.events))  # every event once
    assert_frame_equal(got, bounded)
    assert_frame_equal(got, expected)


@SETTINGS
@given(scenarios(late=True))
def test_late_rows_go_to_the_late_outputs_and_the_rest_joins_exactly(s: Scenario) -> None:
    streamed, bounded, expected, events, _ = run_both(s)
    late = (
        frame(streamed.late_events, EVENTS).height + frame(streamed.late_features, FEATURES).height
    )
    event("late rows" if late else "none late")
    got = canonical(frame(streamed.joined, output_schema(s.keys)))
    assert got.height == len(rows_of(events))  # every event not late joined once
    assert_frame_equal(got, bounded)
    assert_frame_equal(got, expected)


# -- features from the same events (the diamond: a window of the stream joined back to it) -----

CARDS = pl.Schema({"card": pl.String(), "ts": pl.Int64(), "amount": pl.Int64()})


@st.composite
def card_events(draw: st.DrawFn) -> tuple[Partitions, int]:
    ooo = 1_000 * draw(st.integers(0, 3))
    parts: Partitions = []
    for _ in range(draw(st.integers(1, 3))):
        frontier, batches = 0, []
        for _ in range(draw(st.integers(0, 5))):
            batch: Rows = []
            for _ in range(draw(st.integers(0, 5))):
                frontier += 500 * draw(st.integers(0, 4))
                ts = frontier - 500 * draw(st.integers(0, ooo // 500))
                card = draw(st.sampled_from(["a", "b"]))
                batch.append({"card": card, "ts": ts, "amount": draw(st.integers(1, 9))})
            batches.append(batch)
        parts.append(batches)
    return parts, ooo


def scored(
    parts: Partitions, ooo: int, emit: str, step: bool
) -> tuple[Pipeline, MemorySink, MemorySink]:
    p = Pipeline()
    live = p.source(MemorySource(parts, schema=CARDS), timestamp="ts",
                    max_out_of_orderness_ms=ooo)  # fmt: skip
    features = (
        live.key_by("card")
        .window(Tumbling(2_000), emit=emit)  # type: ignore[arg-type]
        .agg(agg.count(), agg.sum("amount"))
    )
    # a step on the events' side puts it first in the plan: progress reaches the join's events
    # input before the window; without it, after
    events = live.with_columns(paid=pl.col("amount") * 2) if step else live
    joined = events.asof_join(features, on="card", ttl=5_000,
                            columns=["window_end", "count", "sum_amount"])  # fmt: skip
    joined.sink(out := MemorySink())
    joined.late_features().sink(late := MemorySink())
    return p, out, late


@SETTINGS
@given(card_events(), st.sampled_from(["final", "update"]), st.booleans())
def test_window_features_of_the_same_stream_join_as_in_a_bounded_run(
    data: tuple[Partitions, int], emit: str, step: bool
) -> None:
    """Each event gets its card's last window that ended by its time: a partition's progress
    reaches the join's event input before the window it feeds has emitted what that progress
    completed, and the join still waits for those windows."""
    parts, ooo = data
    p, streamed, late = scored(parts, ooo, emit, step)
    StreamingExecutor(p, clock=lambda: 0.0).run()
    bp, bounded, _ = scored(parts, ooo, emit, step)
    run_bounded(bp)
    assert not late.batches
    order = ["ts", "card", "amount"]
    got = pl.concat(streamed.batches).sort(order) if streamed.batches else None
    want = pl.concat(bounded.batches).sort(order) if bounded.batches else None
    if want is None:
        assert got is None
        return
    assert got is not None
    event("joined a window" if want["count"].null_count() < want.height else "none joined")
    assert_frame_equal(got, want)


def test_a_window_update_after_its_end_is_a_late_feature_and_joins_nothing() -> None:
    """With allowed lateness a window re-emits after the watermark passed its end; events
    behind that watermark were joined already, so the update goes to late_features()."""
    p = Pipeline()
    times_amounts = [(1_000, 1), (4_500, 2), (1_500, 5), (9_000, 3)]  # one batch each
    rows = [[{"card": "a", "ts": ts, "amount": amount}] for ts, amount in times_amounts]
    live = p.source(MemorySource([rows], schema=CARDS), timestamp="ts")
    window = live.key_by("card").window(Tumbling(2_000), allowed_lateness_ms=10_000)
    features = window.agg(agg.sum("amount"))
    joined = live.asof_join(features, on="card", ttl=None, columns=["window_end", "sum_amount"])
    joined.sink(out := MemorySink())
    joined.late_features().sink(late := MemorySink())
    joined.late_events().sink(late_events := MemorySink())
    StreamingExecutor(p).run()
    assert pl.concat(late.batches).select("window_end", "sum_amount", "is_update").rows() == [
        (2_000, 6, True)
    ]
    assert pl.concat(late_events.batches)["ts"].to_list() == [1_500]  # behind the watermark
    got = pl.concat(out.batches).select("ts", "window_end", "sum_amount").rows()
    assert got == [(1_000, None, None), (4_500, 2_000, 1), (9_000, 6_000, 2)]


# -- validation ----------------------------------------------------------------------------------


def _two(p: Pipeline, events_ts: str | None = "ts", features_ts: str | None = "ts") -> tuple:  # type: ignore[type-arg]
    ev = p.source(MemorySource([[]], schema=EVENTS), timestamp=events_ts, name="e")
    fe = p.source(MemorySource([[]], schema=FEATURES), timestamp=features_ts, name="f")
    return ev, fe


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on": "k", "ttl": -1}, "ttl must be >= 0"),
        ({"on": "nope", "ttl": 1}, "left key column 'nope' does not exist"),
        ({"left_on": "k", "right_on": "g", "ttl": 1}, "left key 'k' is String but right key 'g'"),
        ({"on": "k", "ttl": 1, "columns": ["x"]}, r"columns \['x'\] are not columns"),
        ({"on": "k", "ttl": 1, "suffix": ""}, "suffix must be a non-empty string"),
        ({"on": "k", "ttl": 1, "columns": ["w", "ts"], "suffix": "_x"}, None),
    ],
)
def test_bad_arguments_are_plan_errors(kwargs: dict[str, object], message: str | None) -> None:
    p = Pipeline()
    ev, fe = _two(p)
    ev.asof_join(fe, **kwargs).sink(MemorySink())  # type: ignore[arg-type]
    if message is None:
        assert list(p.plan().schemas[p.plan().sinks[0]] or {})[-2:] == ["w", "ts_x"]
        return
    with pytest.raises(PlanError, match=message):
        p.plan()


def test_both_sides_need_event_time() -> None:
    for events_ts, features_ts, side in (("ts", None, "right"), (None, "ts", "left")):
        p = Pipeline()
        ev, fe = _two(p, events_ts, features_ts)
        ev.asof_join(fe, on="k", ttl=1).sink(MemorySink())
        with pytest.raises(PlanError, match=f"needs event time on both sides; the {side}"):
            p.plan()
    ev, fe = _two(Pipeline())
    with pytest.raises(PlanError, match="pass on= or both"):
        ev.asof_join(fe, ttl=1)
    with pytest.raises(PlanError, match="different pipelines"):
        ev.asof_join(_two(Pipeline())[1], on="k", ttl=1)


@SETTINGS
@given(card_events(), st.booleans())
def test_a_window_after_the_join_counts_none_of_its_rows_late(
    data: tuple[Partitions, int], step: bool
) -> None:
    """The join passes on each partition's progress no further than its own watermark, so a
    window after it has not moved past the events the join still holds."""
    parts, ooo = data

    def build() -> tuple[Pipeline, MemorySink, MemorySink]:
        p = Pipeline()
        live = p.source(MemorySource(parts, schema=CARDS), timestamp="ts",
                        max_out_of_orderness_ms=ooo)  # fmt: skip
        features = live.key_by("card").window(Tumbling(2_000)).agg(agg.sum("amount"))
        events = live.with_columns(paid=pl.col("amount") * 2) if step else live
        joined = events.asof_join(features, on="card", ttl=None, columns=["sum_amount"])
        after = (
            joined.key_by("card").window(Tumbling(3_000)).agg(agg.count(), agg.max("sum_amount"))
        )
        after.sink(out := MemorySink())
        after.late().sink(late := MemorySink())
        return p, out, late

    p, streamed, late = build()
    StreamingExecutor(p, clock=lambda: 0.0).run()
    bp, bounded, _ = build()
    run_bounded(bp)
    assert not late.batches
    order = ["card", "window_start"]
    got = pl.concat(streamed.batches).sort(order) if streamed.batches else None
    want = pl.concat(bounded.batches).sort(order) if bounded.batches else None
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert_frame_equal(got, want)
