"""The stateful-operator contract, one property for every kind of stateful operator: process a
random prefix, snapshot (to bytes and back), restore into a fresh operator of the same pipeline,
process the rest: the output equals one uninterrupted run's. And the state's bad input: another
kind, version or definition, damaged bytes, user state that is not plain data."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.connectors import MemorySink, MemorySource
from strom.engine import values
from strom.engine.contracts import OperatorState, StateError
from strom.pipeline import (
    Agg,
    Hopping,
    Pipeline,
    ProcessContext,
    ProcessFunction,
    Session,
    Stream,
    Tumbling,
    agg,
)
from strom.runtime import ExecutorSnapshot, StreamingExecutor

SCHEMA = pl.Schema({"k": pl.String(), "ts": pl.Int64(), "v": pl.Int64(), "s": pl.String()})
Batches = list[list[list[dict[str, Any]]]]  # partitions of batches of rows


class Sessionize(ProcessFunction):
    """Keyed state of every kind, holding plain data of many types, and timers of both kinds."""

    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        count = ctx.value_state("count")
        count.update((count.value() or 0) + 1)
        seen = ctx.value_state("seen")  # a set and a tuple: encoded, not pickled
        seen.update((seen.value() or frozenset()) | {row["v"]})
        ctx.list_state("times").add((row["ts"], dt.timedelta(milliseconds=row["ts"])))
        if row["s"] is not None:
            ctx.map_state("by_s").put(row["s"], Decimal(row["ts"]) / 4)
        ctx.register_event_time_timer(row["ts"] + 800)
        ctx.register_processing_time_timer(10)  # fires at the end (the clock stands still)
        if row["v"] is not None and row["v"] < -3:
            ctx.delete_event_time_timer(row["ts"] + 800)

    def on_timer(self, timestamp: int, ctx: ProcessContext) -> None:
        times = ctx.list_state("times").get()
        by_s = ctx.map_state("by_s")
        ctx.emit({
            "k": ctx.key,
            "t": timestamp,
            "n": ctx.value_state("count").value(),
            "distinct": len(ctx.value_state("seen").value() or ()),
            "times": len(times),
            "s": ",".join(sorted(by_s.keys())),
            "domain": ctx.time_domain,
        })  # fmt: skip
        ctx.list_state("times").update(t for t in times if t[0] + 800 > timestamp)
        if ctx.time_domain == "processing_time":
            ctx.value_state("count").clear()


OUT = {"k": pl.String, "t": pl.Int64, "n": pl.Int64, "distinct": pl.Int64, "times": pl.Int64,
       "s": pl.String, "domain": pl.String}  # fmt: skip
AGGS = (agg.count(), agg.sum("v"), agg.mean("v"), agg.min("s"), agg.max("v"), agg.first("s"),
        agg.last("v"), agg.var("v"), agg.count_distinct("v"))  # fmt: skip
SKETCHES = (agg.approx_count_distinct("s"), agg.approx_quantile("v", 0.5))


def _source(p: Pipeline, parts: Batches, name: str) -> Stream:
    return p.source(MemorySource(parts, schema=SCHEMA), timestamp="ts",
                    max_out_of_orderness_ms=300, name=name)  # fmt: skip


def _windows(
    spec: Tumbling | Hopping | Session, emit: str = "final", aggs: tuple[Agg, ...] = AGGS
) -> Callable[..., None]:
    def build(p: Pipeline, data: tuple[Batches, Batches], sinks: list[MemorySink]) -> None:
        windowed = (
            _source(p, data[0], "events")
            .key_by("k")
            .window(
                spec,
                allowed_lateness_ms=400,
                emit=emit,  # type: ignore[arg-type]
            )
        )
        result = windowed.agg(*aggs)
        result.sink(sinks[0])
        result.late().sink(sinks[1])

    return build


def _process(p: Pipeline, data: tuple[Batches, Batches], sinks: list[MemorySink]) -> None:
    _source(p, data[0], "events").key_by("k").process(Sessionize(), output_schema=OUT).sink(
        sinks[0]
    )


def _join(p: Pipeline, data: tuple[Batches, Batches], sinks: list[MemorySink]) -> None:
    left, right = _source(p, data[0], "left"), _source(p, data[1], "right")
    joined = left.interval_join(right, on="k", lower_ms=-500, upper_ms=300)
    joined.sink(sinks[0])
    joined.late_left().sink(sinks[1])
    joined.late_right().sink(sinks[2])


def _asof_join(p: Pipeline, data: tuple[Batches, Batches], sinks: list[MemorySink]) -> None:
    events, features = _source(p, data[0], "events"), _source(p, data[1], "features")
    joined = events.asof_join(features, on="k", ttl=600)
    joined.sink(sinks[0])
    joined.late_events().union(joined.late_features()).sink(sinks[1])
    joined.key_by("k").window(Tumbling(1_000)).agg(agg.count()).sink(sinks[2])  # after it


def _keyed_agg(p: Pipeline, data: tuple[Batches, Batches], sinks: list[MemorySink]) -> None:
    _source(p, data[0], "events").key_by("k", "s").agg(*AGGS, *SKETCHES).sink(sinks[0])


def _ttl_join(how: str) -> Callable[..., None]:
    def build(p: Pipeline, data: tuple[Batches, Batches], sinks: list[MemorySink]) -> None:
        left, right = _source(p, data[0], "left"), _source(p, data[1], "right")
        left.join(right, on="k", how=how, ttl_ms=60_000).sink(sinks[0])  # type: ignore[arg-type]

    return build


KINDS: dict[str, Callable[..., None]] = {
    "tumbling": _windows(Tumbling(1_000)),
    "hopping-panes": _windows(Hopping(2_000, 500), emit="update", aggs=AGGS + SKETCHES),
    "hopping": _windows(Hopping(1_500, 1_000)),
    "session": _windows(Session(700), emit="update"),
    "keyed-process": _process,
    "interval-join": _join,
    "asof-join": _asof_join,
    "keyed-agg": _keyed_agg,
    "ttl-join-left": _ttl_join("left"),
    "ttl-join-semi": _ttl_join("semi"),
}


def _run(kind: str, data: tuple[Batches, Batches]) -> tuple[StreamingExecutor, list[MemorySink]]:
    p = Pipeline()
    sinks = [MemorySink() for _ in range(3)]
    KINDS[kind](p, data, sinks)
    return StreamingExecutor(p, clock=lambda: 0.0), sinks


def _frames(batches: list[pl.DataFrame]) -> pl.DataFrame | None:
    return pl.concat(batches, how="vertical") if batches else None


rows = st.fixed_dictionaries({
    "k": st.sampled_from(["a", "b", "c"]),
    "step": st.integers(0, 400),
    "back": st.integers(0, 700),  # disorder beyond the 300 ms allowed: some rows are late
    "v": st.none() | st.integers(-5, 5),
    "s": st.sampled_from(["x", "yy", None]),
})  # fmt: skip


@st.composite
def streams(draw: st.DrawFn) -> Batches:
    parts: Batches = []
    for _ in range(draw(st.integers(1, 2))):
        t = 0
        batches = []
        for raw in draw(st.lists(st.lists(rows, max_size=6), max_size=5)):
            batch = []
            for r in raw:
                t += r["step"]
                batch.append({"k": r["k"], "ts": t - r["back"], "v": r["v"], "s": r["s"]})
            batches.append(batch)
        parts.append(batches)
    return parts


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=streams(), right=streams(), cut=st.integers(0, 7))
def test_snapshot_restore_then_the_rest_equals_an_uninterrupted_run(
    kind: str, left: Batches, right: Batches, cut: int
) -> None:
    data = (left, right)
    whole, expected = _run(kind, data)
    whole.run()

    first, before = _run(kind, data)
    for _ in range(cut):
        if not first.step():
            break
    snapshot = first.snapshot()
    blob = snapshot.to_bytes()
    second, after = _run(kind, data)  # a fresh operator of the same definition
    second.restore(ExecutorSnapshot.from_bytes(blob))
    for name, op in second.stateful_operators().items():
        original = snapshot.states[name]
        assert op.snapshot().equals(original), name  # restoring keeps everything
        assert op.state_size() == first.stateful_operators()[name].state_size()
    second.run()

    for full, a, b in zip(expected, before, after, strict=True):
        got, want = _frames(a.batches + b.batches), _frames(full.batches)
        if want is None:
            assert got is None
            continue
        assert got is not None
        if "join" in kind:  # pairs completed by one batch come in no promised order
            got, want = got.sort(pl.all()), want.sort(pl.all())
        assert_frame_equal(got, want)


# -- bad input ---------------------------------------------------------------------------------

ONE: Batches = [
    [[{"k": "a", "ts": 100, "v": 1, "s": "x"}], [{"k": "b", "ts": 200, "v": 2, "s": None}]]
]


def _stepped(kind: str) -> StreamingExecutor:
    ex, _ = _run(kind, (ONE, ONE))
    ex.step()
    return ex


def _only(ex: StreamingExecutor) -> Any:
    (op,) = ex.stateful_operators().values()
    return op


def test_a_state_of_another_kind_or_version_is_refused() -> None:
    window_state = _only(_stepped("tumbling")).snapshot()
    session = _only(_run("session", (ONE, ONE))[0])
    with pytest.raises(StateError, match="restores session_window state version 1, not "
                                         "time_window state version 1"):  # fmt: skip
        session.restore(window_state)
    newer = OperatorState("time_window", 2, window_state.frames, window_state.meta)
    with pytest.raises(StateError, match="not time_window state version 2"):
        _only(_run("tumbling", (ONE, ONE))[0]).restore(newer)
    for kind in ("keyed-process", "interval-join", "keyed-agg", "ttl-join-left", "asof-join"):
        with pytest.raises(StateError, match="not time_window state"):
            next(iter(_run(kind, (ONE, ONE))[0].stateful_operators().values())).restore(
                window_state
            )


def test_a_state_of_an_operator_defined_otherwise_is_refused() -> None:
    state = _only(_stepped("tumbling")).snapshot()
    ex, _ = _run("hopping", (ONE, ONE))  # also a time window, of other sizes
    with pytest.raises(StateError, match=r"defined as .*Tumbling.* but this one is .*Hopping"):
        _only(ex).restore(state)


def test_a_window_state_of_other_aggregations_is_refused() -> None:
    """A ``sum`` named ``x`` is no state of a ``max`` named ``x`` (nor of a sum of another
    column): the whole aggregation is part of the definition, not just its output name."""

    def window(*aggs: Agg) -> StreamingExecutor:
        p = Pipeline()
        src = MemorySource([[{"ts": 1_000, "k": "a", "v": 2, "w": 3}]])
        keyed = p.source(src, timestamp="ts").key_by("k")
        keyed.window(Tumbling(10_000)).agg(*aggs).sink(MemorySink())
        return StreamingExecutor(p)

    state = _only(window(agg.sum("v", name="x"))).snapshot()
    for other in (agg.max("v", name="x"), agg.sum("w", name="x")):
        with pytest.raises(StateError, match="defined as"):
            _only(window(other)).restore(state)
    _only(window(agg.sum("v", name="x"))).restore(state)  # the same definition is accepted


def test_damaged_bytes_are_refused() -> None:
    blob = _only(_stepped("session")).snapshot().to_bytes()
    for bad in (b"", b"not a state", blob[:-3], blob + b"x", b"STROMSNP" + blob[8:]):
        with pytest.raises(StateError):
            OperatorState.from_bytes(bad)
    snapshot = _stepped("session").snapshot().to_bytes()
    with pytest.raises(StateError):
        ExecutorSnapshot.from_bytes(snapshot[:-1])


def test_an_executor_refuses_a_snapshot_of_another_pipeline_or_too_late() -> None:
    snapshot = _stepped("tumbling").snapshot()
    with pytest.raises(StateError, match="another pipeline: its stateful operators"):
        _run("interval-join", (ONE, ONE))[0].restore(snapshot)
    two_partitions, _ = _run("tumbling", (ONE + ONE, ONE))
    with pytest.raises(StateError, match=r"1 position\(s\) of source 'events', which has 2"):
        two_partitions.restore(snapshot)
    stepped = _stepped("tumbling")
    with pytest.raises(RuntimeError, match="before the first step"):
        stepped.restore(snapshot)


class _Opaque(ProcessFunction):
    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        ctx.value_state("thing").update(object())


def test_user_state_that_is_not_plain_data_fails_the_snapshot_naming_it() -> None:
    p = Pipeline()
    _source(p, ONE, "events").key_by("k").process(_Opaque(), output_schema={"k": pl.String}).sink(
        MemorySink()
    )
    ex = StreamingExecutor(p)
    ex.run()
    with pytest.raises(StateError, match=r"_Opaque: .* cannot store a builtins\.object"):
        _only(ex).snapshot()


# -- plain data --------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes()
    | st.datetimes(
        timezones=st.sampled_from([ZoneInfo("Europe/Berlin"), dt.UTC]), allow_imaginary=False
    )
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.decimals(allow_nan=False)
)
hashable = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner),
                        max_leaves=8)  # fmt: skip
plain = st.recursive(
    hashable,
    lambda inner: st.lists(inner) | st.dictionaries(hashable, inner) | st.sets(hashable),
    max_leaves=20,
)


@settings(max_examples=300)
@given(plain)
def test_plain_data_round_trips_with_its_types(value: object) -> None:
    back = values.decode(values.encode(value))
    assert back == value and _types(back) == _types(value)


def _types(value: object) -> object:
    if isinstance(value, list | tuple):
        return (type(value), [_types(v) for v in value])
    if isinstance(value, dict):
        return (dict, [(_types(k), _types(v)) for k, v in value.items()])
    if isinstance(value, dt.datetime):
        return (dt.datetime, str(value.tzinfo))
    return type(value)


def test_special_floats_and_refusals() -> None:
    back = values.decode(values.encode([math.inf, -math.inf, math.nan]))
    assert back[:2] == [math.inf, -math.inf] and math.isnan(back[2])
    with pytest.raises(StateError, match=r"cannot store a pathlib\..*Path"):
        values.encode({"p": Path("/")})
    with pytest.raises(StateError, match="not an encoded state value"):
        values.decode(b'{"$exec": "rm -rf"}')
