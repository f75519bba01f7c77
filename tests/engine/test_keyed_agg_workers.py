"""A keyed aggregation across workers: the plan is cut before it (as before a window), each key's
table row lives in one worker, and the workers' latest rows together are the bounded group-by."""

from __future__ import annotations

import itertools
import random

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.bounded import run_bounded
from strom.broker import Broker
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, agg
from strom.runtime.distributed.plan_split import WorkerConfig, find_cuts
from strom.runtime.distributed.workers import Worker

_runs = itertools.count()
Parts = list[list[list[dict[str, object]]]]
SCHEMA = pl.Schema({"ts": pl.Int64(), "k": pl.String(), "v": pl.Int64()})


def _build(parts: Parts) -> tuple[Pipeline, MemorySink]:
    p = Pipeline()
    events = p.source(MemorySource(parts, schema=SCHEMA), timestamp="ts")
    events.filter(pl.col("v") >= 0).key_by("k").agg(
        agg.count(), agg.sum("v"), agg.first("v"), agg.max("ts")
    ).sink(out := MemorySink())
    return p, out


def _interleave(workers: list[Worker], seed: int) -> None:
    rng = random.Random(seed)
    alive = list(workers)
    for _ in range(5_000):
        if not alive:
            return
        worker = rng.choice(alive)
        if not worker.step():
            alive.remove(worker)
    raise AssertionError("workers still running after 5,000 steps")


def test_the_plan_is_cut_before_a_keyed_aggregation() -> None:
    p, _ = _build([[[{"ts": 0, "k": "a", "v": 1}]]])
    (cut,) = find_cuts(p.plan())
    assert cut.keys == ("k",) and cut.upstream.label == "Filter"


def test_the_plan_cuts_both_inputs_of_a_join_by_their_keys() -> None:
    p = Pipeline()
    left = p.source(MemorySource([[{"k": 1, "a": 2}]]))
    right = p.source(MemorySource([[{"id": 1, "b": 3}]]))
    left.join(right, left_on="k", right_on="id", ttl_ms=1_000).sink(MemorySink())
    cuts = find_cuts(p.plan())
    assert [(c.upstream.label, c.keys) for c in cuts] == [("Source", ("k",)), ("Source", ("id",))]


rows = st.fixed_dictionaries(
    {"k": st.sampled_from("abcdef"), "step": st.integers(0, 50), "v": st.integers(-2, 9)}
)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.lists(st.lists(rows, max_size=8), max_size=4), min_size=1, max_size=3),
    st.integers(1, 3),
    st.integers(0, 2**32),
)
def test_workers_latest_rows_equal_the_bounded_group_by(
    strom_broker: Broker, raw: list[list[list[dict[str, object]]]], n: int, seed: int
) -> None:
    parts: Parts = []
    for partition in raw:
        t = 0
        batches = []
        for batch in partition:
            out = []
            for r in batch:
                t += int(str(r["step"]))
                out.append({"ts": t, "k": r["k"], "v": r["v"]})
            batches.append(out)
        parts.append(batches)
    run = next(_runs)
    workers, sinks = [], []
    for i in range(n):
        p, sink = _build(parts)
        config = WorkerConfig(i, n, f"keyed{run}", f"run{run}", strom_broker.bootstrap_servers)
        workers.append(Worker(p.plan(), config))
        sinks.append(sink)
    _interleave(workers, seed)
    q, bounded = _build(parts)
    run_bounded(q)
    tables = [
        s.to_frame().unique("k", keep="last", maintain_order=True) for s in sinks if s.batches
    ]
    keys = [set(t["k"].to_list()) for t in tables]
    assert sum(map(len, keys)) == len(set().union(*keys))  # each key in one worker
    if not bounded.batches:
        assert not tables
        return
    final = pl.concat(tables).with_columns(is_update=False).sort("k")
    # first_v: the order key (event time, partition, position) is the repartition topic's
    # partition and position in a worker, which keeps each source partition's order but not
    # the tie-break between source partitions; without ties in event time it agrees
    expected = bounded.to_frame()
    assert_frame_equal(final.drop("first_v"), expected.drop("first_v"))


def test_a_ttl_join_across_workers_equals_the_bounded_join(strom_broker: Broker) -> None:
    """Both inputs are repartitioned by their keys, so every pair meets in one worker; nothing
    outlives the TTL (the clock stands still), so the union is the bounded left join."""
    users = [[{"id": i, "name": f"n{i}"} for i in range(0, 12, 2)]]
    orders = [[[{"k": i % 9, "a": i} for i in range(j, j + 6)] for j in range(0, 30, 6)]]

    def build(how: str) -> tuple[Pipeline, MemorySink]:
        p = Pipeline()
        left = p.source(MemorySource(orders), name="orders")
        right = p.source(MemorySource([users]), name="users")
        joined = left.join(right, left_on="k", right_on="id", how=how, ttl_ms=60_000)  # type: ignore[arg-type]
        joined.sink(out := MemorySink())
        return p, out

    run = next(_runs)
    workers, sinks = [], []
    for i in range(2):
        p, sink = build("left")
        config = WorkerConfig(i, 2, f"join{run}", f"run{run}", strom_broker.bootstrap_servers)
        workers.append(Worker(p.plan(), config, clock=lambda: 0.0))
        sinks.append(sink)
    _interleave(workers, seed=3)
    q, bounded = build("left")
    run_bounded(q)
    got = pl.concat([s.to_frame() for s in sinks if s.batches])
    assert got.height == 30
    assert_frame_equal(got.sort(pl.all()), bounded.to_frame().sort(pl.all()))
