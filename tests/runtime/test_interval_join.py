"""Interval joins: streaming == bounded == DuckDB, purging, late rows, validation, snapshots."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.bounded import run_bounded
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, PlanError, Stream, Tumbling, agg
from strom.runtime import MAX_WATERMARK, MIN_WATERMARK, ExecutorSnapshot, StreamingExecutor

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEFT = pl.Schema(
    {"id": pl.Int64(), "k": pl.String(), "g": pl.Int64(), "ts": pl.Int64(), "v": pl.Int64()}
)
RIGHT = pl.Schema(
    {"rid": pl.Int64(), "k": pl.String(), "g": pl.Int64(), "ts": pl.Int64(), "w": pl.Int64()}
)
WINDOW_COLUMNS = ["k", "window_start", "window_end", "count", "sum_v", "is_update"]

Rows = list[dict[str, object]]
Partitions = list[list[Rows]]  # partition -> batches -> rows


@dataclass
class Scenario:
    left: Partitions
    right: Partitions
    left_ooo: int
    right_ooo: int
    lower: int | None
    upper: int | None
    keys: tuple[str, ...]


@st.composite
def scenarios(draw: st.DrawFn, *, late_events: bool) -> Scenario:
    """Two sources of 1-3 partitions each, in random micro-batches.

    Every row lies within its source's out-of-orderness behind its partition's frontier (so is
    never late) unless ``late_events``, when some rows fall far behind. Times are multiples of
    500 ms, so rows often sit exactly on a bound or on the watermark.
    """
    lower = draw(st.sampled_from([None, None, -4_000, -1_000, 0, 500]))
    upper = draw(st.sampled_from([None, None, -500, 0, 1_000, 4_000]))
    if lower is not None and upper is not None and lower > upper:
        lower, upper = upper, lower
    keys = draw(st.sampled_from([("k",), ("k", "g")]))
    ids = itertools.count()

    def side(id_column: str, value_column: str) -> tuple[Partitions, int]:
        ooo = 500 * draw(st.integers(0, 4))
        partitions: Partitions = []
        for _ in range(draw(st.integers(1, 3))):
            frontier = 500 * draw(st.integers(-6, 6))
            rows: Rows = []
            for _ in range(draw(st.integers(0, 12))):
                frontier += 500 * draw(st.integers(0, 3))
                back = 500 * draw(st.integers(0, ooo // 500))
                if late_events and draw(st.integers(0, 4)) == 0:
                    back = 500 * draw(st.integers(0, ooo // 500 + 20))
                rows.append(
                    {
                        id_column: next(ids),
                        "k": draw(st.sampled_from(["a", "a", "b", None])),
                        "g": draw(st.integers(0, 1)),
                        "ts": frontier - back,
                        value_column: draw(st.integers(-50, 50)),
                    }
                )
            cuts = sorted(draw(st.sets(st.integers(1, max(1, len(rows) - 1)), max_size=5)))
            bounds = [0, *[c for c in cuts if c < len(rows)], len(rows)]
            partitions.append([rows[a:b] for a, b in itertools.pairwise(bounds) if b > a])
        return partitions, ooo

    left, left_ooo = side("id", "v")
    right, right_ooo = side("rid", "w")
    return Scenario(left, right, left_ooo, right_ooo, lower, upper, keys)


def late_ids(s: Scenario) -> tuple[set[int], set[int], int]:
    """Left ids and right rids the documented semantics send to the late outputs, and how
    many rows arrived behind the watermark, modelled independently: round-robin polls over left
    then right partitions; a row arriving below the watermark before its batch is late iff the
    other side's rows can be purged (``lower`` bounded for left rows, ``upper`` for right rows);
    a partition finishes one poll after its last batch; the watermark is the minimum over
    unfinished partitions of (max ts - ooo)."""
    sides = [("left", p, s.left_ooo) for p in s.left] + [("right", p, s.right_ooo) for p in s.right]
    max_seen: list[int | None] = [None] * len(sides)
    finished = [False] * len(sides)
    cursor = [0] * len(sides)
    wm = MIN_WATERMARK
    late: dict[str, set[int]] = {"left": set(), "right": set()}
    can_be_late = {"left": s.lower is not None, "right": s.upper is not None}
    behind = 0
    while not all(finished):
        for i, (name, batches, _) in enumerate(sides):
            if finished[i]:
                continue
            if cursor[i] == len(batches):
                finished[i] = True
            else:
                batch = batches[cursor[i]]
                cursor[i] += 1
                for row in batch:
                    if int(str(row["ts"])) < wm:
                        behind += 1
                        if can_be_late[name]:
                            late[name].add(int(str(row["id" if name == "left" else "rid"])))
                top = max(int(str(r["ts"])) for r in batch)
                seen = max_seen[i]
                max_seen[i] = top if seen is None else max(seen, top)
            live = [
                MIN_WATERMARK if m is None else m - ooo
                for m, f, (_, _, ooo) in zip(max_seen, finished, sides, strict=True)
                if not f
            ]
            wm = max(wm, min(live)) if live else MAX_WATERMARK
    return late["left"], late["right"], behind


@dataclass
class Outputs:
    joined: MemorySink
    late_left: MemorySink
    late_right: MemorySink
    windows: MemorySink
    window_late: MemorySink


def build(
    s: Scenario, left: Partitions | None = None, right: Partitions | None = None
) -> tuple[Pipeline, Outputs]:
    p = Pipeline()
    ls = p.source(
        MemorySource(left if left is not None else s.left, schema=LEFT),
        timestamp="ts",
        max_out_of_orderness_ms=s.left_ooo,
        name="left",
    )
    rs = p.source(
        MemorySource(right if right is not None else s.right, schema=RIGHT),
        timestamp="ts",
        max_out_of_orderness_ms=s.right_ooo,
        name="right",
    )
    joined = ls.interval_join(rs, on=s.keys, lower_ms=s.lower, upper_ms=s.upper)
    out = Outputs(MemorySink(), MemorySink(), MemorySink(), MemorySink(), MemorySink())
    joined.sink(out.joined)
    joined.late_left().sink(out.late_left)
    joined.late_right().sink(out.late_right)
    windows = joined.key_by("k").window(Tumbling(2_000)).agg(agg.count(), agg.sum("v"))
    windows.sink(out.windows)
    windows.late().sink(out.window_late)
    return p, out


def output_columns(keys: tuple[str, ...]) -> list[tuple[str, str]]:
    """(right column, output name) for the scenario schemas joined on ``keys``."""
    return [(c, c + "_right" if c in LEFT else c) for c in RIGHT if c not in keys]


def reference(s: Scenario, left: Rows, right: Rows) -> pl.DataFrame:
    """The join by DuckDB SQL: ``r.ts BETWEEN l.ts + lower AND l.ts + upper``."""
    con = duckdb.connect()
    con.register("l", pl.DataFrame(left, schema=LEFT).to_arrow())
    con.register("r", pl.DataFrame(right, schema=RIGHT).to_arrow())
    conditions = [f"l.{k} = r.{k}" for k in s.keys]
    if s.lower is not None and s.upper is not None:
        conditions.append(f"r.ts BETWEEN l.ts + {s.lower} AND l.ts + {s.upper}")
    elif s.lower is not None:
        conditions.append(f"r.ts >= l.ts + {s.lower}")
    elif s.upper is not None:
        conditions.append(f"r.ts <= l.ts + {s.upper}")
    right_cols = ", ".join(f'r.{c} AS "{name}"' for c, name in output_columns(s.keys))
    sql = f"""
        SELECT l.*, {right_cols}, greatest(l.ts, r.ts) AS join_time
        FROM l JOIN r ON {" AND ".join(conditions)}
    """
    result = pl.from_arrow(con.sql(sql).to_arrow_table())
    assert isinstance(result, pl.DataFrame)
    return canonical(result, s.keys)


def canonical(df: pl.DataFrame, keys: tuple[str, ...]) -> pl.DataFrame:
    schema = pl.Schema(
        {**LEFT, **{name: RIGHT[c] for c, name in output_columns(keys)}, "join_time": pl.Int64()}
    )
    if df.width == 0:
        return pl.DataFrame(schema=schema)
    assert df.columns == list(schema)
    return df.cast(schema).sort("id", "rid")


def rows(parts: Partitions) -> Rows:
    return [r for part in parts for batch in part for r in batch]


def without(parts: Partitions, column: str, drop: set[int]) -> Partitions:
    return [[[r for r in batch if r[column] not in drop] for batch in part] for part in parts]


def window_frame(sink: MemorySink) -> pl.DataFrame:
    if not sink.batches:
        return pl.DataFrame(schema={c: pl.Int64 for c in WINDOW_COLUMNS}).cast(
            {"k": pl.String, "is_update": pl.Boolean}
        )
    return sink.to_frame().select(WINDOW_COLUMNS).sort("window_end", "window_start", "k")


def check(s: Scenario) -> tuple[set[int], set[int], int]:
    late_left, late_right, behind = late_ids(s)
    on_left = without(s.left, "id", late_left)
    on_right = without(s.right, "rid", late_right)
    p, streamed = build(s)
    StreamingExecutor(p).run()
    joined = canonical(streamed.joined.to_frame(), s.keys)
    # the joined rows are exactly the join of the on-time rows, each pair once
    assert_frame_equal(joined, reference(s, rows(on_left), rows(on_right)))
    # late rows are never lost: each is in its late output, unchanged
    for sink, parts, column, ids in (
        (streamed.late_left, s.left, "id", late_left),
        (streamed.late_right, s.right, "rid", late_right),
    ):
        expected = [r for r in rows(parts) if r[column] in ids]
        got = sink.to_frame().sort(column).to_dicts() if sink.batches else []
        assert got == sorted(expected, key=lambda r: int(str(r[column])))
    windows = window_frame(streamed.windows)
    assert not windows["is_update"].any()
    if behind:
        # rows behind the watermark on an unbounded side still join (their partners are all
        # kept), so a window after the join may find the result late: counted or late, once
        window_late = streamed.window_late.to_frame().height if streamed.window_late.batches else 0
        assert int(windows["count"].sum() or 0) + window_late == joined.height
    else:
        # joined rows carry max(ts) >= the watermark: never late for a window downstream
        assert not streamed.window_late.batches
    # the bounded runner over every row equals DuckDB over every row, with no late rows
    q, bounded = build(s)
    run_bounded(q)
    assert_frame_equal(
        canonical(bounded.joined.to_frame(), s.keys), reference(s, rows(s.left), rows(s.right))
    )
    assert bounded.late_left.to_frame().height == bounded.late_right.to_frame().height == 0
    # ... and over the on-time rows equals the streaming run, downstream window included
    if late_left or late_right:
        q, bounded = build(s, on_left, on_right)
        run_bounded(q)
        assert_frame_equal(canonical(bounded.joined.to_frame(), s.keys), joined)
    if not behind:
        assert_frame_equal(window_frame(bounded.windows), windows)
    return late_left, late_right, behind


@SETTINGS
@given(scenarios(late_events=False))
def test_in_bound_disorder_streaming_equals_bounded_equals_duckdb(s: Scenario) -> None:
    assert check(s) == (set(), set(), 0)
    event("unbounded side" if s.lower is None or s.upper is None else "bounded")


@SETTINGS
@given(scenarios(late_events=True))
def test_late_rows_go_to_the_late_outputs_and_the_rest_equals_bounded(s: Scenario) -> None:
    late_left, late_right, behind = check(s)
    event("late rows" if late_left or late_right else "no late rows")
    joined_behind = behind > len(late_left) + len(late_right)
    event("rows behind the watermark joined" if joined_behind else "none behind it joined")


def _two(
    left: list[Rows],
    right: list[Rows],
    *,
    ooo: int = 0,
    **join: object,
) -> tuple[Pipeline, MemorySink, MemorySink, MemorySink]:
    p = Pipeline()
    ls = p.source(MemorySource([left]), timestamp="ts", max_out_of_orderness_ms=ooo, name="l")
    rs = p.source(MemorySource([right]), timestamp="ts", max_out_of_orderness_ms=ooo, name="r")
    joined = ls.interval_join(rs, **join)  # type: ignore[arg-type]
    joined.sink(out := MemorySink())
    joined.late_left().sink(late_left := MemorySink())
    joined.late_right().sink(late_right := MemorySink())
    return p, out, late_left, late_right


def _state_sizes(ex: StreamingExecutor) -> list[int]:
    (op,) = ex.stateful_operators().values()
    sizes = []
    while ex.step():
        sizes.append(op.state_size())
    sizes.append(op.state_size())
    return sizes


PURGE_LEFT = [
    [{"ts": 0, "k": "a"}, {"ts": 100, "k": "a"}, {"ts": 200, "k": "a"}],
    [{"ts": 5_000, "k": "a"}],
]
PURGE_RIGHT = [[{"ts": 100, "k": "a"}], [{"ts": 5_000, "k": "a"}], [{"ts": 5_100, "k": "a"}]]


def test_state_is_purged_as_the_watermark_advances() -> None:
    p, out, _, _ = _two(PURGE_LEFT, PURGE_RIGHT, on="k", lower_ms=-500, upper_ms=500)
    ex = StreamingExecutor(p)
    # round 2: the watermark reaches 5_000, so left rows below 4_500 and right rows below
    # 4_500 can meet nothing more; at the end (watermark +inf) both sides are empty
    assert _state_sizes(ex) == [4, 2, 3, 0]
    assert out.to_frame().select("ts", "ts_right").sort("ts", "ts_right").rows() == [
        (0, 100),
        (100, 100),
        (200, 100),
        (5_000, 5_000),
        (5_000, 5_100),
    ]
    metrics = ex.metrics()["2:IntervalJoin"]
    assert (metrics.rows_in, metrics.rows_out, metrics.state_size) == (7, 5, 0)
    assert metrics.watermark == MAX_WATERMARK


def test_rows_on_the_bounds_meet_rows_kept_until_the_watermark_passes_them() -> None:
    # left 0 can meet right rows up to 500: it is kept at watermark 500, when right 500 arrives
    left = [[{"ts": 0, "k": "a"}], [{"ts": 600, "k": "a"}]]
    right = [[{"ts": 500, "k": "a", "n": 1}], [{"ts": 500, "k": "a", "n": 2}]]
    p, out, late_left, late_right = _two(left, right, on="k", lower_ms=0, upper_ms=500)
    StreamingExecutor(p).run()
    assert sorted(out.to_frame().select("ts", "n").rows()) == [(0, 1), (0, 2)]
    # right 0 can meet left rows up to 500: it is kept at watermark 500, when left 500 arrives
    left = [[{"ts": 600, "k": "a"}], [{"ts": 500, "k": "a"}]]
    right = [[{"ts": 0, "k": "a"}, {"ts": 500, "k": "a"}]]
    p, out, late_left, late_right = _two(left, right, on="k", lower_ms=-500, upper_ms=0)
    StreamingExecutor(p).run()
    assert sorted(out.to_frame().select("ts", "ts_right").rows()) == [
        (500, 0),
        (500, 500),
        (600, 500),
    ]
    assert not late_left.batches and not late_right.batches


def test_unbounded_join_is_an_inner_join_that_never_purges_or_is_late() -> None:
    left = [[{"ts": 100_000, "k": "a", "v": 1}], [{"ts": 0, "k": "b", "v": 2}]]
    right = [
        [{"ts": 0, "k": "a", "w": 3}],
        [{"ts": 200_000, "k": "b", "w": 4}],
        [{"ts": -5, "k": "a", "w": 5}],
    ]
    p, out, late_left, late_right = _two(left, right, on="k", lower_ms=None, upper_ms=None)
    ex = StreamingExecutor(p)
    assert _state_sizes(ex) == [2, 4, 5, 5]  # nothing is ever purged
    expected = [
        (100_000, "a", 1, 0, 3, 100_000),
        (100_000, "a", 1, -5, 5, 100_000),
        (0, "b", 2, 200_000, 4, 200_000),
    ]
    assert sorted(out.to_frame().rows()) == sorted(expected)
    assert not late_left.batches and not late_right.batches
    q, bounded, _, _ = _two(left, right, on="k", lower_ms=None, upper_ms=None)
    run_bounded(q)
    assert sorted(bounded.to_frame().rows()) == sorted(expected)


def test_one_sided_unbounded_join() -> None:
    # purchases (left) match every login (right) of the same user at or before them
    purchases = [[{"ts": 50_000, "k": "a"}], [{"ts": 60_000, "k": "b"}, {"ts": 500, "k": "a"}]]
    logins = [[{"ts": 1_000, "k": "a"}], [{"ts": 2_000, "k": "b"}], [{"ts": 100, "k": "a"}]]
    p, out, late_left, late_right = _two(purchases, logins, on="k", lower_ms=None, upper_ms=0)
    ex = StreamingExecutor(p)
    sizes = _state_sizes(ex)
    assert sizes[-1] == 2  # logins are kept forever; purchases are purged
    assert sorted(out.to_frame().select("ts", "ts_right").rows()) == [
        (50_000, 1_000),
        (60_000, 2_000),
    ]
    # left rows are never late (right rows are never purged), even the one at 500
    assert not late_left.batches
    # the login at 100 arrives behind the watermark (2_000): purchases it could match may be
    # gone (the one at 500 was never kept), so it goes to the late output
    assert late_right.to_frame().rows() == [(100, "a")]
    assert ex.metrics()["2:IntervalJoin"].late_rows == 1
    q, bounded, _, _ = _two(purchases, logins[:2], on="k", lower_ms=None, upper_ms=0)
    run_bounded(q)
    assert sorted(bounded.to_frame().rows()) == sorted(out.to_frame().rows())


def test_a_row_behind_the_watermark_is_late_and_not_joined() -> None:
    left = [[{"ts": 5_000, "k": "a", "id": 1}], [{"ts": 1_000, "k": "a", "id": 2}]]
    right = [[{"ts": 4_500, "k": "a", "rid": 1}], [{"ts": 900, "k": "a", "rid": 2}]]
    p, out, late_left, late_right = _two(left, right, on="k", lower_ms=-1_000, upper_ms=0)
    StreamingExecutor(p).run()
    assert out.to_frame().select("id", "rid").rows() == [(1, 1)]
    # both rows at ~1_000 arrive with the watermark at 4_500; they would match each other,
    # but neither joins: each is in its late output instead, unchanged
    assert late_left.to_frame().rows() == [(1_000, "a", 2)]
    assert late_right.to_frame().rows() == [(900, "a", 2)]
    q, bounded, bl, br = _two(left, right, on="k", lower_ms=-1_000, upper_ms=0)
    run_bounded(q)
    assert sorted(bounded.to_frame().select("id", "rid").rows()) == [(1, 1), (2, 2)]
    assert bl.to_frame().height == br.to_frame().height == 0


def test_multi_column_keys_with_different_names_keep_the_right_keys() -> None:
    left = [[{"ts": 0, "a": 1, "b": "x", "v": 1}, {"ts": 0, "a": 1, "b": "y", "v": 2}]]
    right = [[{"ts": 10, "x": 1, "y": "x", "w": 3}, {"ts": 10, "x": 2, "y": "x", "w": 4}]]
    p, out, _, _ = _two(
        left, right, left_on=["a", "b"], right_on=("x", "y"), lower_ms=0, upper_ms=10
    )
    StreamingExecutor(p).run()
    assert out.to_frame().columns == ["ts", "a", "b", "v", "ts_right", "x", "y", "w", "join_time"]
    assert out.to_frame().rows() == [(0, 1, "x", 1, 10, 1, "x", 3, 10)]
    q, bounded, _, _ = _two(
        left, right, left_on=["a", "b"], right_on=("x", "y"), lower_ms=0, upper_ms=10
    )
    run_bounded(q)
    assert bounded.to_frame().equals(out.to_frame())


def test_name_clashes_get_the_suffix_and_joins_chain() -> None:
    def build(sink: MemorySink) -> tuple[Pipeline, Stream]:
        p = Pipeline()
        a = p.source(MemorySource([[[{"ts": 0, "k": "a", "v": 1}]]]), timestamp="ts", name="a")
        b_rows = [[[{"ts": 5, "k": "a", "v": 2, "join_time": 7}]]]
        b = p.source(MemorySource(b_rows), timestamp="ts", name="b")
        c = p.source(MemorySource([[[{"ts": 9, "k": "a", "v": 3}]]]), timestamp="ts", name="c")
        ab = a.interval_join(b, on="k", lower_ms=0, upper_ms=10, suffix="_b")
        abc = ab.interval_join(c, on="k", lower_ms=0, upper_ms=10, suffix="_c")
        abc.sink(sink)
        return p, abc

    p, abc = build(streamed := MemorySink())
    plan = p.plan()
    # a right column named like a left column or like the join's own join_time is suffixed;
    # the left's event time join_time (from the first join) is replaced by the new one
    columns = ["ts", "k", "v", "ts_b", "v_b", "join_time_b", "ts_c", "v_c", "join_time"]
    assert list(plan.schemas[abc.node] or {}) == columns
    assert plan.timestamps[abc.node] == "join_time"
    StreamingExecutor(plan).run()
    assert streamed.to_frame().rows() == [(0, "a", 1, 5, 2, 7, 9, 3, 9)]
    run_bounded(build(bounded := MemorySink())[0])
    assert bounded.to_frame().equals(streamed.to_frame())


def test_self_join_matches_each_pair_once() -> None:
    batches = [[{"ts": 0, "k": "a"}, {"ts": 50, "k": "a"}], [{"ts": 120, "k": "a"}]]
    p = Pipeline()
    s = p.source(MemorySource([batches]), timestamp="ts")
    s.interval_join(s, on="k", lower_ms=-100, upper_ms=100).sink(streamed := MemorySink())
    StreamingExecutor(p).run()
    pairs = sorted(streamed.to_frame().select("ts", "ts_right").rows())
    assert pairs == [(0, 0), (0, 50), (50, 0), (50, 50), (50, 120), (120, 50), (120, 120)]


def test_datetime_event_time_and_downstream_window() -> None:
    left = [
        [{"ts": datetime(2024, 1, 1, 0, 0, 1), "k": "a"}],
        [{"ts": datetime(2024, 1, 1, 0, 0, 12), "k": "a"}],
    ]
    base = int(pl.Series([datetime(2024, 1, 1)]).dt.epoch("ms")[0])
    right = [[{"ts": base + 1_500, "k": "a"}], [{"ts": base + 11_000, "k": "a"}]]

    def build(sinks: tuple[MemorySink, MemorySink]) -> Pipeline:
        p = Pipeline()
        ls = p.source(MemorySource([left]), timestamp="ts", name="l")
        rs = p.source(MemorySource([right]), timestamp="ts", name="r")
        joined = ls.interval_join(rs, on="k", lower_ms=-2_000, upper_ms=2_000)
        joined.sink(sinks[0])
        joined.key_by("k").window(Tumbling(10_000)).agg(agg.count()).sink(sinks[1])
        return p

    streamed = (MemorySink(), MemorySink())
    StreamingExecutor(build(streamed)).run()
    # the order in which the two sources' batches interleave is not part of the contract
    joined, counts = (sink.to_frame().sort(pl.all()) for sink in streamed)
    assert joined.get_column("join_time").to_list() == [base + 1_500, base + 12_000]
    assert counts.select("window_start", "count").rows() == [(base, 1), (base + 10_000, 1)]
    bounded = (MemorySink(), MemorySink())
    run_bounded(build(bounded))
    for s, b in zip(streamed, bounded, strict=True):
        assert s.to_frame().sort(pl.all()).equals(b.to_frame().sort(pl.all()))


def test_snapshot_restore_mid_stream_gives_the_same_results() -> None:
    rng = random.Random(7)
    s = Scenario(
        left=[
            [
                [
                    {
                        "id": i * 3 + j,
                        "k": rng.choice("ab"),
                        "g": 0,
                        "ts": i * 700 + rng.randint(-300, 0),
                        "v": j,
                    }
                    for j in range(3)
                ]
                for i in range(8)
            ]
        ],
        right=[
            [
                [
                    {
                        "rid": 100 + i,
                        "k": rng.choice("ab"),
                        "g": 0,
                        "ts": i * 500 + rng.randint(-300, 0),
                        "w": i,
                    }
                ]
                for i in range(10)
            ],
            [
                [
                    {
                        "rid": 200 + i,
                        "k": rng.choice("ab"),
                        "g": 0,
                        "ts": i * 900 + rng.randint(-300, 0),
                        "w": i,
                    }
                ]
                for i in range(5)
            ],
        ],
        left_ooo=300,
        right_ooo=300,
        lower=-1_000,
        upper=600,
        keys=("k",),
    )
    p, full = build(s)
    StreamingExecutor(p).run()
    expected = canonical(full.joined.to_frame(), s.keys)
    assert expected.height > 10
    for cut in range(1, 12):
        p, before = build(s)
        ex = StreamingExecutor(p)
        for _ in range(cut):
            ex.step()
        snapshot = ExecutorSnapshot.from_bytes(ex.snapshot().to_bytes())
        # a fresh executor of the same pipeline, its sources seeked past what was read
        q, after = build(s)
        resumed = StreamingExecutor(q)
        resumed.restore(snapshot)
        assert [o.state_size() for o in resumed.stateful_operators().values()] == [
            o.state_size() for o in ex.stateful_operators().values()
        ]
        resumed.run()
        both = [f for f in (before.joined, after.joined) if f.batches]
        got = pl.concat([f.to_frame() for f in both]) if both else pl.DataFrame()
        assert_frame_equal(canonical(got, s.keys), expected)
        windows = pl.concat([*before.windows.batches, *after.windows.batches])
        assert_frame_equal(windows, full.windows.to_frame())


def test_null_keys_never_match() -> None:
    left: list[Rows] = [[{"ts": 0, "k": None}, {"ts": 0, "k": "a"}]]
    right: list[Rows] = [[{"ts": 0, "k": None}, {"ts": 0, "k": "a"}]]
    p, out, _, _ = _two(left, right, on="k", lower_ms=0, upper_ms=0)
    StreamingExecutor(p).run()
    assert out.to_frame().rows() == [(0, "a", 0, 0)]


def test_null_event_time_is_an_error() -> None:
    p, _, _, _ = _two(
        [[{"ts": None, "k": "a"}, {"ts": 1, "k": "a"}]],
        [[{"ts": 0, "k": "a"}]],
        on="k",
        lower_ms=0,
        upper_ms=0,
    )
    with pytest.raises(ValueError, match="null event time"):
        StreamingExecutor(p).run()


KEYED = pl.Schema({"ts": pl.Int64(), "k": pl.String(), "n": pl.Int32()})


def _plan_error(**join: object) -> str:
    p = Pipeline()
    ls = p.source(MemorySource([[]], schema=KEYED), timestamp="ts", name="l")
    rs = p.source(MemorySource([[]], schema=KEYED), timestamp="ts", name="r")
    right_ts = join.pop("right_ts", "ts")
    if right_ts is None:
        rs = p.source(MemorySource([[]], schema=KEYED), name="untimed")
    join.setdefault("lower_ms", 0)
    join.setdefault("upper_ms", 0)
    join.setdefault("on", "k")
    ls.interval_join(rs, **join).sink(MemorySink())  # type: ignore[arg-type]
    with pytest.raises(PlanError) as info:
        p.plan()
    return str(info.value)


def test_validation_errors() -> None:
    assert "left key column 'nope' does not exist" in _plan_error(on="nope")
    assert "right key column 'z' does not exist" in _plan_error(on=None, left_on="k", right_on="z")
    assert "left key 'k' is String but right key 'n' is Int32" in _plan_error(
        on=None, left_on="k", right_on="n"
    )
    assert "the right stream has none" in _plan_error(right_ts=None)
    assert "lower_ms=5 is greater than upper_ms=1" in _plan_error(lower_ms=5, upper_ms=1)
    with pytest.raises(PlanError, match="lower_ms must be integer milliseconds"):
        _plan_error(lower_ms=1.5)  # refused where the join is written, before plan()
    assert "would be named 'ts'" in _plan_error(suffix="")
    with pytest.raises(PlanError, match="different pipelines"):
        Pipeline().source(MemorySource([[]], schema=KEYED)).interval_join(
            Pipeline().source(MemorySource([[]], schema=KEYED)), on="k", lower_ms=0, upper_ms=0
        )
    p = Pipeline()
    s = p.source(MemorySource([[]], schema=KEYED), timestamp="ts")
    with pytest.raises(PlanError, match="not both"):
        s.interval_join(s, on="k", left_on="k", lower_ms=0, upper_ms=0)
    with pytest.raises(PlanError, match="on= or both"):
        s.interval_join(s, left_on="k", lower_ms=0, upper_ms=0)
    with pytest.raises(PlanError, match="same number"):
        s.interval_join(s, left_on=["k", "n"], right_on="k", lower_ms=0, upper_ms=0)


def test_a_left_column_named_join_time_must_be_renamed() -> None:
    p = Pipeline()
    schema = pl.Schema({"ts": pl.Int64(), "k": pl.String(), "join_time": pl.Int64()})
    ls = p.source(MemorySource([[]], schema=schema), timestamp="ts", name="l")
    rs = p.source(MemorySource([[]], schema=KEYED), timestamp="ts", name="r")
    ls.interval_join(rs, on="k", lower_ms=0, upper_ms=0).sink(MemorySink())
    with pytest.raises(PlanError, match="left column 'join_time' is reserved"):
        p.plan()
