"""Keyed process functions: the fraud pattern, timer/state semantics, streaming == bounded."""

from __future__ import annotations

import doctest
import itertools
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import strom.pipeline.process
from strom.bounded import run_bounded
from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Pipeline, PlanError, ProcessContext, ProcessFunction
from strom.runtime import MAX_WATERMARK, StreamingExecutor

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MINUTE = 60_000
SCHEMA = pl.Schema({"card": pl.String(), "ts": pl.Int64(), "status": pl.String(), "id": pl.Int64()})
ALERT = pl.Schema(
    {"card": pl.String(), "first_ts": pl.Int64(), "last_ts": pl.Int64(), "count": pl.Int64()}
)
Partitions = list[list[list[dict[str, Any]]]]


class ThreeFailures(ProcessFunction):
    """Three failed payments of one card within a minute -> one alert; the window restarts.

    State: the card's recent failure times (event-time order is guaranteed). A cleanup timer a
    minute after each failure drops the times that can no longer be part of an alert.
    """

    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        if row["status"] != "failed":
            return
        ts = ctx.timestamp
        assert ts is not None
        failures = ctx.list_state("failures")
        recent = [t for t in failures.get() if ts - t < MINUTE] + [ts]
        if len(recent) >= 3:
            ctx.emit({"card": ctx.key, "first_ts": recent[0], "last_ts": ts, "count": 3})
            failures.clear()
        else:
            failures.update(recent)
            ctx.register_event_time_timer(ts + MINUTE)

    def on_timer(self, timestamp: int, ctx: ProcessContext) -> None:
        failures = ctx.list_state("failures")
        failures.update(t for t in failures.get() if timestamp - t < MINUTE)


def brute_force_alerts(events: list[dict[str, Any]]) -> list[tuple[str, int, int, int]]:
    """The reference: per card, scan failures in (ts, partition, position) order; an alert is
    the first index j where the failures since the last alert contain 3 within a minute."""
    out = []
    for card in sorted({e["card"] for e in events}):
        times = [e["ts"] for e in events if e["card"] == card and e["status"] == "failed"]
        begin = 0
        for j in range(len(times)):
            window = [t for t in times[begin : j + 1] if times[j] - t < MINUTE]
            if len(window) >= 3:
                out.append((card, window[0], times[j], 3))
                begin = j + 1
    return sorted(out)


def _pipeline(partitions: Partitions, ooo: int, fn: ProcessFunction, schema: pl.Schema) -> Any:
    p = Pipeline()
    src = MemorySource(partitions, schema=SCHEMA)
    stream = p.source(src, timestamp="ts", max_out_of_orderness_ms=ooo).key_by("card")
    stream.process(fn, output_schema=schema).sink(sink := MemorySink())
    return p, sink


def _rows(sink: MemorySink) -> list[tuple[Any, ...]]:
    return sorted(sink.to_frame().rows()) if sink.batches else []


def _event(i: int, card: str, ts: int, status: str = "failed") -> dict[str, Any]:
    return {"card": card, "ts": ts, "status": status, "id": i}


def test_hand_written_fraud_stream() -> None:
    events = [
        _event(0, "c1", 0),
        _event(1, "c2", 5_000),
        _event(2, "c1", 30_000, "ok"),
        _event(3, "c1", 59_000),
        _event(4, "c2", 70_000),  # c2: 5_000 and 70_000 are more than a minute apart
        _event(5, "c1", 61_000),  # c1: 0 expired at 60_000 -> only 59_000, 61_000
        _event(6, "c1", 100_000),  # c1: 59_000, 61_000, 100_000 within a minute -> alert
        _event(7, "c2", 100_000),
        _event(8, "c2", 129_999),  # c2: 70_000, 100_000, 129_999 -> alert
        _event(9, "c1", 101_000),  # c1 restarted after its alert
    ]
    expected = [("c1", 59_000, 100_000, 3), ("c2", 70_000, 129_999, 3)]
    assert brute_force_alerts(events) == expected
    # two partitions, shuffled within the 20 s bound
    parts: Partitions = [[[events[1], events[0]], [events[4], events[3]]], [[events[2]]]]
    parts[1].append([events[6], events[5], events[7]])
    parts[1].append([events[9], events[8]])
    p, streamed = _pipeline(parts, 45_000, ThreeFailures(), ALERT)
    ex = StreamingExecutor(p)
    ex.run()
    assert _rows(streamed) == expected
    (op,) = ex.stateful_operators().values()
    assert op.state_size() == 0  # every cleanup timer fired at the end
    q, bounded = _pipeline(parts, 45_000, ThreeFailures(), ALERT)
    run_bounded(q)
    assert _rows(bounded) == expected


def test_cleanup_timers_drop_state_as_the_watermark_passes() -> None:
    batches = [[_event(0, "c1", 0)], [_event(1, "c2", 10_000)], [_event(2, "c3", 100_000)]]
    p, _ = _pipeline([batches], 0, ThreeFailures(), ALERT)
    ex = StreamingExecutor(p)
    (op,) = ex.stateful_operators().values()
    ex.step()  # c1 buffered: the watermark (0) has not passed it yet
    assert op.core.buffer and not op.core.state
    ex.step()  # watermark 10_000: c1 processed, its cleanup timer set at 60_000
    assert set(op.core.state) == {("c1",)}
    ex.step()  # watermark 100_000: c1 and c2 cleaned up, c3 waits in the buffer
    assert not op.core.state and len(op.core.buffer) == 1
    ex.run()
    assert op.state_size() == 0


@dataclass
class FraudScenario:
    partitions: Partitions
    ooo: int


@st.composite
def fraud_scenarios(draw: st.DrawFn) -> FraudScenario:
    """1-3 partitions; every event within ``ooo`` behind its partition's frontier."""
    ooo = draw(st.integers(0, 40_000))
    partitions: Partitions = []
    next_id = 0
    for _ in range(draw(st.integers(1, 3))):
        frontier = draw(st.integers(0, 100_000))
        rows = []
        for _ in range(draw(st.integers(0, 40))):
            frontier += draw(st.integers(0, 25_000))
            ts = frontier - draw(st.integers(0, ooo))
            status = draw(st.sampled_from(["failed", "failed", "ok"]))
            rows.append(_event(next_id, draw(st.sampled_from(["c1", "c2"])), ts, status))
            next_id += 1
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(rows) - 1)), max_size=8)))
        bounds = [0, *[c for c in cuts if c < len(rows)], len(rows)]
        partitions.append([rows[a:b] for a, b in itertools.pairwise(bounds) if b > a])
    return FraudScenario(partitions, ooo)


def _ordered_events(partitions: Partitions) -> list[dict[str, Any]]:
    tagged = [
        (e["ts"], p, i, e)
        for p, part in enumerate(partitions)
        for i, e in enumerate(e for batch in part for e in batch)
    ]
    return [e for *_, e in sorted(tagged, key=lambda t: t[:3])]


@SETTINGS
@given(fraud_scenarios())
def test_fraud_streaming_equals_bounded_equals_brute_force(s: FraudScenario) -> None:
    expected = brute_force_alerts(_ordered_events(s.partitions))
    p, streamed = _pipeline(s.partitions, s.ooo, ThreeFailures(), ALERT)
    ex = StreamingExecutor(p)
    ex.run()
    assert _rows(streamed) == expected
    assert next(iter(ex.stateful_operators().values())).state_size() == 0
    q, bounded = _pipeline(s.partitions, s.ooo, ThreeFailures(), ALERT)
    run_bounded(q)
    assert _rows(bounded) == expected


TRACE = pl.Schema(
    {
        "card": pl.String(),
        "kind": pl.String(),
        "at": pl.Int64(),
        "step": pl.Int64(),
        "seen": pl.String(),
    }
)


class Tracer(ProcessFunction):
    """Records every callback with a per-key step number and the state it saw; sets, deletes and
    re-registers timers (including ones already due) to exercise the scheduler."""

    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        self._record("element", row["id"], ctx)
        ts = ctx.timestamp
        assert ts is not None
        ctx.list_state("ids").add(row["id"])
        ctx.map_state("by_status").put(row["status"], row["id"])
        ctx.register_event_time_timer(ts + 7_000 + row["id"] % 3 * 1_000)
        if row["id"] % 4 == 0:
            ctx.register_event_time_timer(ts - 1)  # already due: fires next
        if row["id"] % 5 == 0:
            ctx.delete_event_time_timer(ts + 7_000)

    def on_timer(self, timestamp: int, ctx: ProcessContext) -> None:
        self._record("timer", timestamp, ctx)
        ids = ctx.list_state("ids").get()
        if ids:
            ctx.list_state("ids").update(ids[1:])
        ctx.value_state("fired").update((ctx.value_state("fired").value() or 0) + 1)

    def _record(self, kind: str, at: int, ctx: ProcessContext) -> None:
        step = ctx.value_state("step")
        n = (step.value() or 0) + 1
        step.update(n)
        seen = f"{ctx.list_state('ids').get()}|{sorted(ctx.map_state('by_status').items())}"
        ctx.emit({"card": ctx.key, "kind": kind, "at": at, "step": n, "seen": seen})


@SETTINGS
@given(fraud_scenarios())
def test_every_callback_is_the_same_in_both_executors(s: FraudScenario) -> None:
    p, streamed = _pipeline(s.partitions, s.ooo, Tracer(), TRACE)
    StreamingExecutor(p).run()
    q, bounded = _pipeline(s.partitions, s.ooo, Tracer(), TRACE)
    run_bounded(q)
    assert _rows(streamed) == _rows(bounded)


class Clocked(ProcessFunction):
    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        ctx.register_processing_time_timer(int(ctx.current_processing_time) + 100)
        ctx.register_event_time_timer(row["ts"] + 5)

    def on_timer(self, timestamp: int, ctx: ProcessContext) -> None:
        ctx.emit(
            {
                "card": ctx.key,
                "domain": ctx.time_domain,
                "at": timestamp,
                "end": ctx.current_watermark == MAX_WATERMARK,
            }
        )


def test_timer_domains_and_the_injectable_clock() -> None:
    now = [0.0]
    batches: list[Any] = [[_event(0, "c1", 10)], None, None, [_event(1, "c1", 1_000)]]
    p = Pipeline()
    stream = p.source(MemorySource([batches], schema=SCHEMA), timestamp="ts").key_by("card")
    schema = {"card": pl.String, "domain": pl.String, "at": pl.Int64, "end": pl.Boolean}
    stream.process(Clocked(), output_schema=schema, ordering="arrival").sink(sink := MemorySink())
    ex = StreamingExecutor(p, clock=lambda: now[0])
    ex.step()  # element at 10 processed on arrival: processing timer at 100, event timer at 15
    assert not sink.batches
    now[0] = 150.0
    ex.step()  # the clock passed 100
    assert sink.to_frame().rows() == [("c1", "processing_time", 100, False)]
    ex.run()
    assert sink.to_frame().rows()[1:] == [
        ("c1", "event_time", 15, False),  # watermark 1_000 passed 15
        ("c1", "event_time", 1_005, True),  # end of input: watermark +inf
        ("c1", "processing_time", 250, True),  # pending processing timers fire at the end
    ]


def test_snapshot_restore_round_trip() -> None:
    batches = [[_event(0, "c1", 0)], [_event(1, "c1", 30_000)], [_event(2, "c1", 40_000)]]
    p, sink = _pipeline([batches], 100_000, ThreeFailures(), ALERT)
    ex = StreamingExecutor(p)
    (op,) = ex.stateful_operators().values()
    ex.step()
    snap = op.snapshot()
    ex.step()
    op.restore(snap)  # the second batch is lost: no alert
    ex.run()
    assert not sink.batches
    q, sink2 = _pipeline([batches], 100_000, ThreeFailures(), ALERT)
    ex2 = StreamingExecutor(q)
    (op2,) = ex2.stateful_operators().values()
    ex2.step()
    ex2.step()
    op2.restore(op2.snapshot())
    ex2.run()
    assert _rows(sink2) == [("c1", 0, 40_000, 3)]


def test_process_validation() -> None:
    p = Pipeline()
    src = MemorySource([[[_event(0, "c1", 0)]]], schema=SCHEMA)
    p.source(src).key_by("card").process(ThreeFailures(), output_schema=ALERT).sink(MemorySink())
    with pytest.raises(PlanError, match="needs event time"):
        p.plan()
    with pytest.raises(PlanError, match="ProcessFunction"):
        Pipeline().source(src).key_by("card").process(
            lambda r: r,  # type: ignore[arg-type]
            output_schema=ALERT,
        )


def test_emitting_an_unknown_column_names_it() -> None:
    class Bad(ProcessFunction):
        def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
            ctx.emit({"card": ctx.key, "oops": 1})

    p, _ = _pipeline([[[_event(0, "c1", 0)]]], 0, Bad(), ALERT)
    with pytest.raises(ValueError, match=r"\['oops'\] not in output_schema"):
        StreamingExecutor(p).run()


def test_docstring_example_runs() -> None:
    result = doctest.testmod(strom.pipeline.process)
    assert result.attempted > 0 and result.failed == 0
