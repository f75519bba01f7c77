"""An as-of join across workers: both inputs are cut by the key (as for an interval join), so
each card's events and features meet in one worker, and the workers' outputs together are the
bounded join."""

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
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime.distributed.plan_split import WorkerConfig, find_cuts
from strom.runtime.distributed.workers import Worker

_runs = itertools.count()
Parts = list[list[list[dict[str, object]]]]
SCHEMA = pl.Schema({"ts": pl.Int64(), "card": pl.String(), "amount": pl.Int64()})


def _build(parts: Parts) -> tuple[Pipeline, MemorySink, MemorySink]:
    p = Pipeline()
    live = p.source(MemorySource(parts, schema=SCHEMA), timestamp="ts", name="payments")
    features = live.key_by("card").window(Tumbling(100)).agg(agg.count(), agg.sum("amount"))
    joined = live.asof_join(
        features, on="card", ttl=300, columns=["window_end", "count", "sum_amount"]
    )
    joined.sink(out := MemorySink())
    joined.late_events().sink(late := MemorySink())
    return p, out, late


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


def test_the_plan_cuts_both_inputs_of_an_asof_join_by_the_key() -> None:
    p, _, _ = _build([[[{"ts": 0, "card": "a", "amount": 1}]]])
    cuts = find_cuts(p.plan())
    # the window and the join's events share the cut of the source; the features get their own
    assert [(c.upstream.label, c.keys) for c in cuts] == [
        ("Source", ("card",)),
        ("WindowAgg", ("card",)),
    ]


rows = st.fixed_dictionaries(
    {"card": st.sampled_from("abcd"), "step": st.integers(0, 60), "amount": st.integers(1, 9)}
)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.lists(st.lists(rows, max_size=8), max_size=4), min_size=1, max_size=3),
    st.integers(0, 2**32),
)
def test_two_workers_join_as_the_bounded_run(
    strom_broker: Broker, raw: list[list[list[dict[str, object]]]], seed: int
) -> None:
    parts: Parts = []
    for partition in raw:
        t, batches = 0, []
        for batch in partition:
            out = []
            for r in batch:
                t += int(str(r["step"]))
                out.append({"ts": t, "card": r["card"], "amount": r["amount"]})
            batches.append(out)
        parts.append(batches)
    run = next(_runs)
    workers, sinks, lates = [], [], []
    for i in range(2):
        p, sink, late = _build(parts)
        config = WorkerConfig(i, 2, f"asof{run}", f"run{run}", strom_broker.bootstrap_servers)
        workers.append(Worker(p.plan(), config, clock=lambda: 0.0))
        sinks.append(sink)
        lates.append(late)
    _interleave(workers, seed)
    assert not any(late.batches for late in lates)
    q, bounded, _ = _build(parts)
    run_bounded(q)
    got = [s.to_frame() for s in sinks if s.batches]
    cards = [set(f["card"].to_list()) for f in got]
    assert sum(map(len, cards)) == len(set().union(*cards))  # each card in one worker
    if not bounded.batches:
        assert not got
        return
    order = ["ts", "card", "amount"]
    assert_frame_equal(pl.concat(got).sort(order), bounded.to_frame().sort(order))
