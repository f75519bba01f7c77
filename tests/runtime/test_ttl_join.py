"""The streaming equi-join with a state TTL: while no row outlives its TTL it emits the bounded
join's rows (every `how`, random batches over several partitions per side); rows that outlive
it stop matching, and the left rows that met nothing (left, anti) are emitted as they leave."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom import MemorySink, MemorySource, Pipeline, PlanError
from strom.bounded import run_bounded
from strom.runtime import StreamingExecutor

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEFT = pl.Schema({"k": pl.Int64(), "j": pl.String(), "a": pl.Int64()})
RIGHT = pl.Schema({"rk": pl.Int64(), "j": pl.String(), "a": pl.Int64(), "b": pl.String()})
HOWS = ["inner", "left", "semi", "anti"]


def _side(row: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    return st.lists(st.lists(st.lists(row, max_size=5), max_size=4), min_size=1, max_size=3)


left_parts = _side(
    st.fixed_dictionaries(
        {
            "k": st.none() | st.integers(0, 3),
            "j": st.sampled_from(["x", "y"]),
            "a": st.integers(0, 99),
        }
    )
)
right_parts = _side(
    st.fixed_dictionaries(
        {
            "rk": st.none() | st.integers(0, 3),
            "j": st.sampled_from(["x", "y"]),
            "a": st.integers(0, 99),
            "b": st.none() | st.sampled_from(["p", "q"]),
        }
    )
)


def _build(left: Any, right: Any, how: str, ttl_ms: int | None) -> tuple[Pipeline, MemorySink]:
    p = Pipeline()
    lhs = p.source(MemorySource(left, schema=LEFT), name="left")
    rhs = p.source(MemorySource(right, schema=RIGHT), name="right")
    joined = lhs.join(rhs, left_on=["k", "j"], right_on=["rk", "j"], how=how, ttl_ms=ttl_ms)  # type: ignore[arg-type]
    joined.sink(out := MemorySink())
    return p, out


def _frame(sink: MemorySink, schema: pl.Schema) -> pl.DataFrame:
    return sink.to_frame() if sink.batches else pl.DataFrame(schema=schema)


@SETTINGS
@given(left_parts, right_parts, st.sampled_from(HOWS))
def test_within_the_ttl_the_stream_emits_the_bounded_join(left: Any, right: Any, how: str) -> None:
    p, bounded = _build(left, right, how, ttl_ms=None)
    run_bounded(p)
    q, streamed = _build(left, right, how, ttl_ms=60_000)
    executor = StreamingExecutor(q, clock=lambda: 0.0)  # the clock stands still: nothing expires
    executor.run()
    expected = _frame(bounded, p.plan().schemas[p.plan().sinks[0]] or pl.Schema())
    got = _frame(streamed, expected.schema)
    assert got.schema == expected.schema
    assert_frame_equal(got.sort(pl.all()), expected.sort(pl.all()))
    (op,) = executor.stateful_operators().values()
    assert op.state_size() == 0  # every input ended: nothing is held


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _stepwise(how: str) -> list[tuple[Any, ...]]:
    """One round at t=0, 50, 60 and 150 (each partition polled once a round), TTL 100 ms: left
    key 1 and right key 2 arrive at 0, left key 2 at 60 (within right key 2's TTL), left key 3
    and right key 1 at 150 (after left key 1's TTL)."""
    x = "x"
    left = [[{"k": 1, "j": x, "a": 10}, None, {"k": 2, "j": x, "a": 20}, {"k": 3, "j": x, "a": 30}]]
    right = [[{"rk": 2, "j": x, "a": 0, "b": "p"}, None, None, {"rk": 1, "j": x, "a": 0, "b": "q"}]]
    p, out = _build(left, right, how, ttl_ms=100)
    clock = Clock()
    executor = StreamingExecutor(p, clock=clock)
    for now in (0.0, 50.0, 60.0, 150.0):  # one round each: every partition polled once
        clock.now = now
        executor.step()
    while executor.step():
        pass
    executor.close()
    return out.to_frame().rows() if out.batches else []


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("inner", [(2, "x", 20, 2, 0, "p")]),
        ("left", [(2, "x", 20, 2, 0, "p"), (1, "x", 10, None, None, None),
                  (3, "x", 30, None, None, None)]),
        ("semi", [(2, "x", 20)]),
        ("anti", [(1, "x", 10), (3, "x", 30)]),
    ],
)  # fmt: skip
def test_rows_that_outlive_the_ttl_stop_matching(how: str, expected: list[tuple[Any, ...]]) -> None:
    # left key 1 expired (0 + 100 <= 150) before its right row came: it leaves unmatched at
    # 150; left key 3 leaves when the input ends
    assert _stepwise(how) == expected


def test_a_null_key_is_final_at_once() -> None:
    left = [[{"k": None, "j": "x", "a": 1}]]
    right = [[None, {"rk": 5, "j": "x", "a": 0, "b": "p"}]]
    for how, rows in (("left", [(None, "x", 1, None, None, None)]), ("anti", [(None, "x", 1)])):
        p, out = _build(left, right, how, ttl_ms=1_000)
        executor = StreamingExecutor(p, clock=lambda: 0.0)
        executor.step()
        assert out.to_frame().rows() == rows  # before the input ended
        (op,) = executor.stateful_operators().values()
        assert op.state_size() == 0


def test_ttl_must_be_positive() -> None:
    p, _ = _build([[]], [[]], "inner", ttl_ms=0)
    with pytest.raises(PlanError, match="ttl_ms must be positive"):
        p.plan()


def _model(left: Any, right: Any, times: list[float], how: str, ttl: int) -> list[tuple[Any, ...]]:
    """The rows a TTL join emits, by its definition: item ``i`` of every partition arrives in
    round ``i`` at ``times[i]``; a left and a right row meet iff their keys are equal and not
    null and they arrived less than ``ttl`` apart (the second while the first is held)."""

    def arrivals(parts: Any) -> list[tuple[float, dict[str, Any]]]:
        return [(times[i], r) for part in parts for i, batch in enumerate(part) for r in batch]

    lefts, rights = arrivals(left), arrivals(right)
    out: list[tuple[Any, ...]] = []
    for la, lrow in lefts:
        partners = [
            r
            for ra, r in rights
            if lrow["k"] is not None
            and (lrow["k"], lrow["j"]) == (r["rk"], r["j"])
            and abs(la - ra) < ttl
        ]
        base = (lrow["k"], lrow["j"], lrow["a"])
        if how in ("inner", "left"):
            out += [(*base, r["rk"], r["a"], r["b"]) for r in partners]
            if how == "left" and not partners:
                out.append((*base, None, None, None))
        elif (how == "semi") == bool(partners):
            out.append(base)
    return sorted(out, key=repr)


@SETTINGS
@given(
    left_parts,
    right_parts,
    st.sampled_from(HOWS),
    st.lists(st.integers(0, 80), min_size=5, max_size=5),
    st.integers(1, 150),
)
def test_with_a_moving_clock_rows_meet_iff_they_arrived_within_the_ttl(
    left: Any, right: Any, how: str, steps: list[int], ttl: int
) -> None:
    times = [float(sum(steps[: i + 1])) for i in range(len(steps))]
    p, out = _build(left, right, how, ttl_ms=ttl)
    clock = Clock()
    executor = StreamingExecutor(p, clock=clock)
    for now in times:
        clock.now = now
        executor.step()
    assert not executor.step()  # partitions hold at most 4 batches: every one has ended
    executor.close()
    got = sorted(out.to_frame().rows() if out.batches else [], key=repr)
    assert got == _model(left, right, times, how, ttl)
