"""Every aggregation class obeys its laws: partials added to accumulators and merged in any order
and grouping give the bounded result over all rows."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.engine.aggregation import Agg
from strom.engine.constants import PART, SEQ, TS
from strom.pipeline import agg

AGGS: list[Agg] = [
    agg.count(),
    agg.count("v"),
    agg.sum("v"),
    agg.mean("v"),
    agg.min("v"),
    agg.max("v"),
    agg.first("v"),
    agg.last("v"),
    agg.var("v"),
    agg.std("v"),
    agg.count_distinct("v"),
    agg.approx_count_distinct("v"),
    agg.approx_quantile("v", 0.3),
]
# sums of small integers are exact; Chan's merge of moments is not the bounded two-pass formula
INEXACT = ("var", "std")
SCHEMA = {TS: pl.Int64, PART: pl.Int64, SEQ: pl.Int64, "v": pl.Int64}

Event = tuple[int, int | None]  # (event time, value)


@st.composite
def split_events(draw: st.DrawFn) -> tuple[list[list[list[Event]]], int]:
    """Events of 1-3 partitions, each cut into consecutive batches; a seed for merge order."""
    value = st.none() | st.integers(-50, 50)
    partitions = []
    for _ in range(draw(st.integers(1, 3))):
        events = draw(st.lists(st.tuples(st.integers(0, 20), value), max_size=25))
        cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=4)))
        bounds = [0, *cuts, len(events)]
        partitions.append([events[a:b] for a, b in itertools.pairwise(bounds)])
    if not any(events for batches in partitions for events in batches):
        partitions[0].append([(0, None)])  # a window holds at least one event
    return partitions, draw(st.integers(0, 2**32))


def _frames(partitions: list[list[list[Event]]]) -> list[tuple[int, pl.DataFrame]]:
    """Each non-empty batch as (partition, frame with the internal columns)."""
    out = []
    for p, batches in enumerate(partitions):
        seq = 0
        for events in batches:
            if events:
                rows = [(t, p, seq + i, v) for i, (t, v) in enumerate(events)]
                out.append((p, pl.DataFrame(rows, schema=SCHEMA, orient="row")))
                seq += len(events)
    return out


def _one_group(frame: pl.DataFrame, exprs: list[pl.Expr]) -> pl.DataFrame:
    """``exprs`` in a group-by context over all of ``frame`` (as a window's single group)."""
    return frame.with_columns(pl.lit(0).alias("__g")).group_by("__g").agg(exprs).drop("__g")


def _bounded(a: Agg, frame: pl.DataFrame) -> Any:
    dtype = a.output_dtype(None if a.column is None else pl.Int64())
    grouped = _one_group(frame.sort(TS, PART, SEQ), a.bounded_exprs(dtype))
    finish = a.bounded_finish(dtype, [])
    if finish is not None:
        grouped = grouped.with_columns(finish)
    return grouped.get_column(a.name).item()


def _partial(a: Agg, frame: pl.DataFrame) -> tuple[Any, ...]:
    batch = frame.sort(TS, SEQ) if a.needs_order else frame
    out = _one_group(batch, a.partial_exprs("p_"))
    assert out.columns == [f"p_{s}" for s in a.partials]
    return out.row(0)


def _same(a: Agg, got: Any, want: Any) -> bool:
    if a.label in INEXACT and got is not None and want is not None:
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return bool(got == want)


@pytest.mark.parametrize("a", AGGS, ids=lambda a: a.name)
@settings(max_examples=60, deadline=None)
@given(case=split_events())
def test_partials_merged_in_any_order_equal_the_bounded_result(
    a: Agg, case: tuple[list[list[list[Event]]], int]
) -> None:
    partitions, seed = case
    rng = random.Random(seed)
    batches = _frames(partitions)
    want = _bounded(a, pl.concat([f for _, f in batches]))

    accs = []
    for partition, frame in batches:
        acc = a.create()
        assert len(acc) == a.width
        a.add(acc, _partial(a, frame), partition)
        accs.append(acc)
    # one accumulator fed every partial in order: the incremental path of a single state row
    direct = a.create()
    for partition, frame in batches:
        a.add(direct, _partial(a, frame), partition)
    assert _same(a, a.result(direct), want), (a.result(direct), want)

    # any merge tree, operands in any order, empty accumulators (the identity) mixed in
    accs += [a.create() for _ in range(rng.randint(0, 2))]
    rng.shuffle(accs)
    while len(accs) > 1:
        i, j = rng.sample(range(len(accs)), 2)
        a.merge(accs[i], accs[j])
        del accs[j]
    assert _same(a, a.result(accs[0]), want), (a.result(accs[0]), want)


@pytest.mark.parametrize("a", AGGS, ids=lambda a: a.name)
def test_merge_leaves_its_argument_unchanged(a: Agg) -> None:
    frames = _frames([[[(1, 3), (2, None)], [(5, 7)]]])
    mine, theirs = a.create(), a.create()
    a.add(mine, _partial(a, frames[0][1]), 0)
    a.add(theirs, _partial(a, frames[1][1]), 0)
    before = repr(theirs)
    a.merge(mine, theirs)
    assert repr(theirs) == before


@pytest.mark.parametrize("first", [float("nan"), 3.0])
def test_min_and_max_skip_nan_across_batches_as_polars_does(first: float) -> None:
    """A NaN held from one batch gives way to a later value (Polars' min/max skip NaN unless
    every value is NaN), so streaming, whose partials merge, equals bounded."""
    import math

    from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg, run_bounded, run_streaming

    nan = float("nan")
    batches = [[{"ts": 1, "k": "a", "v": first}], [{"ts": 2, "k": "a", "v": nan}],
               [{"ts": 3, "k": "a", "v": 5.0}], [{"ts": 4, "k": "b", "v": nan}]]  # fmt: skip
    results = []
    for run in (run_bounded, run_streaming):
        p, sink = Pipeline(), MemorySink()
        keyed = p.source(MemorySource([batches]), timestamp="ts").key_by("k")
        keyed.window(Tumbling(10)).agg(agg.min("v"), agg.max("v")).sink(sink)
        run(p)
        results.append(sink.to_frame().sort("k").select("k", "min_v", "max_v").rows())
    bounded, streamed = results
    assert bounded[0] == ("a", 3.0 if first == 3.0 else 5.0, 5.0)
    assert streamed[0] == bounded[0]
    assert all(math.isnan(v) for v in (*bounded[1][1:], *streamed[1][1:]))  # only NaN: NaN


def test_count_distinct_counts_nan_once_across_batches_as_polars_does() -> None:
    """Each batch's partial holds its own NaN object and NaN != NaN; the accumulator still
    counts NaN as one distinct value, so streaming (partials merged) equals bounded."""
    from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg, run_bounded, run_streaming

    nan = float("nan")
    batches = [[{"ts": 1, "k": "a", "v": nan}, {"ts": 1, "k": "a", "v": 1.0}],
               [{"ts": 2, "k": "a", "v": nan}], [{"ts": 3, "k": "a", "v": nan}]]  # fmt: skip
    results = []
    for run in (run_bounded, run_streaming):
        p, sink = Pipeline(), MemorySink()
        keyed = p.source(MemorySource([batches]), timestamp="ts").key_by("k")
        keyed.window(Tumbling(10)).agg(agg.count_distinct("v")).sink(sink)
        run(p)
        results.append(sink.to_frame().get_column("count_distinct_v").to_list())
    assert results == [[2], [2]]
