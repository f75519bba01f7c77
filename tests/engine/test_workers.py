"""Workers sharing a plan through repartition topics: in-process workers, interleaved at random.

Each worker gets its own copy of the pipeline (as separate processes would) and the embedded
broker carries the repartition topics; the union of the workers' sinks must be what one process,
and the bounded runner, compute.
"""

from __future__ import annotations

import io
import itertools
import random

import polars as pl
from engine_model import Scenario, build, canonical, reference, scenarios, windows_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.bounded import run_bounded
from strom.broker import Broker
from strom.connectors import MemorySink, MemorySource
from strom.connectors.kafka.batch import HEADERS_DTYPE
from strom.engine.contracts import END_OF_PARTITION
from strom.pipeline import Pipeline, ProcessContext, ProcessFunction, Tumbling, agg
from strom.runtime import MAX_WATERMARK, MIN_WATERMARK, latest
from strom.runtime.distributed.plan_split import WorkerConfig, owned
from strom.runtime.distributed.repartition import (
    Progress,
    RepartitionPartition,
    RepartitionSource,
    decode_progress,
    encode_progress,
    merge_writers,
    route,
)
from strom.runtime.distributed.workers import Worker

SETTINGS = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_runs = itertools.count()


def _workers(
    s: Scenario, n: int, bootstrap: str, partitions: int | None = None, app: str | None = None
) -> tuple[list[Worker], list[tuple[MemorySink, MemorySink]]]:
    run = next(_runs)
    workers, sinks = [], []
    for i in range(n):
        p, out, late = build(s)
        config = WorkerConfig(i, n, app or f"app{run}", f"run{run}", bootstrap, partitions)
        workers.append(Worker(p.plan(), config))
        sinks.append((out, late))
    return workers, sinks


def _interleave(workers: list[Worker], seed: int, max_steps: int = 5_000) -> None:
    """Step the workers in a random order until each has finished."""
    rng = random.Random(seed)
    alive = list(workers)
    for _ in range(max_steps):
        if not alive:
            return
        worker = rng.choice(alive)
        if not worker.step():
            alive.remove(worker)
    raise AssertionError(f"workers still running after {max_steps} steps")


def _union(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame()


@SETTINGS
@given(scenarios(late_events=False), st.integers(1, 3), st.integers(0, 2**32))
def test_in_bound_disorder_workers_equal_bounded(
    strom_broker: Broker, s: Scenario, n: int, seed: int
) -> None:
    workers, sinks = _workers(s, n, strom_broker.bootstrap_servers)
    _interleave(workers, seed)
    results = _union([out.to_frame() for out, _ in sinks])
    assert all(late.to_frame().height == 0 for _, late in sinks)
    q, bounded_out, _ = build(s)
    run_bounded(q)
    expected = bounded_out.to_frame()
    if expected.height or results.height:
        assert not results["is_update"].any()  # each window once, final, in exactly one worker
        assert_frame_equal(
            results.sort("window_end", "window_start", "k"),
            expected.sort("window_end", "window_start", "k"),
        )
        # every event counted once per window: progress records never became rows
        pairs = sum(
            len(windows_of(int(str(r["ts"])), s.spec))
            for part in s.partitions
            for batch in part
            for r in batch
        )
        assert results["count"].sum() == pairs


@SETTINGS
@given(scenarios(late_events=True), st.integers(1, 3), st.integers(0, 2**32))
def test_late_events_are_counted_or_late_never_both(
    strom_broker: Broker, s: Scenario, n: int, seed: int
) -> None:
    """Which events are late depends on timing (as with one process); whatever the timing,
    every (event, window) pair is either counted or in the late output, and the final results
    are exactly those over the events that were not late."""
    workers, sinks = _workers(s, n, strom_broker.bootstrap_servers)
    _interleave(workers, seed)
    out = _union([o.to_frame() for o, _ in sinks])
    late = _union([lt.to_frame() for _, lt in sinks])
    dropped = (
        set(zip(late["id"].to_list(), late["window_start"].to_list(), strict=True))
        if late.height
        else set()
    )
    final = latest(out, ["k"]) if out.height else out
    # a row is judged only against watermarks its own partition had passed: a row on time for
    # its partition is never late because another partition (another worker) raced ahead
    for part in s.partitions:
        seen = -(2**63)
        for batch in part:
            for row in batch:
                for start, end in windows_of(int(str(row["ts"])), s.spec):
                    if (row["id"], start) in dropped:
                        assert end + s.lateness <= seen - s.ooo, (row, seen)
            seen = max(seen, *(int(str(r["ts"])) for r in batch))
    assert_frame_equal(
        canonical(final), canonical(reference(s, dropped)), check_exact=False, rel_tol=1e-9
    )


def _rows(ts: list[int], key: str, first_id: int) -> list[dict[str, object]]:
    return [{"id": first_id + i, "k": key, "ts": t, "v": 1} for i, t in enumerate(ts)]


def test_a_slow_writer_holds_the_watermark_back(strom_broker: Broker) -> None:
    """Worker 0 reads far ahead in event time before worker 1 starts: worker 1's rows, on time
    for their own partition, must not be late, and no window may fire before worker 1 reports."""
    fast = [_rows([100_000 + 1_000 * i for i in range(j, j + 5)], "a", j) for j in (0, 5, 10)]
    slow = [_rows([1_000 * i for i in range(j, j + 5)], "b", 100 + j) for j in (0, 5, 10)]
    s = Scenario([fast, slow], Tumbling(5_000), ooo=0, lateness=0)
    workers, sinks = _workers(s, 2, strom_broker.bootstrap_servers, partitions=2)
    for _ in range(40):  # worker 0 reads its whole partition, writes it, and then waits
        assert workers[0].step()
    assert all(out.to_frame().height == 0 for out, _ in sinks)
    _interleave(workers, seed=1)
    assert all(late.to_frame().height == 0 for _, late in sinks)
    results = _union([out.to_frame() for out, _ in sinks]).sort("k", "window_start")
    assert results.select("k", "window_start", "count").rows() == [
        *(("a", 100_000 + 5_000 * w, 5) for w in range(3)),
        *(("b", 5_000 * w, 5) for w in range(3)),
    ]


def test_each_key_lives_in_one_worker(strom_broker: Broker) -> None:
    rows = [{"id": i, "k": "abcdefg"[i % 7], "ts": i * 100, "v": i} for i in range(280)]
    parts = [[rows[i : i + 10] for i in range(p, 280, 40)] for p in range(0, 40, 10)]
    s = Scenario(parts, Tumbling(2_000), ooo=0, lateness=0)
    workers, sinks = _workers(s, 3, strom_broker.bootstrap_servers)
    _interleave(workers, seed=7)
    keys = [set(out.to_frame()["k"].to_list()) if out.batches else set() for out, _ in sinks]
    assert set().union(*keys) == set("abcdefg")
    assert sum(len(k) for k in keys) == 7  # no key in two workers
    assert len(workers[0].topics) == 1 and workers[0].topics[0].endswith("-repartition-1")


def test_a_second_run_skips_the_records_of_the_first(strom_broker: Broker) -> None:
    """Repartition topics are reused across runs of one app; each run reads only its own."""
    rows = [{"id": i, "k": "abc"[i % 3], "ts": i * 300, "v": i} for i in range(90)]
    parts = [[rows[i : i + 9] for i in range(p * 45, p * 45 + 45, 9)] for p in range(2)]
    s = Scenario(parts, Tumbling(3_000), ooo=0, lateness=0)
    q, bounded_out, _ = build(s)
    run_bounded(q)
    expected = bounded_out.to_frame().sort("k", "window_start")
    for n in (2, 3):  # a different worker count too: the topic keeps its partition count
        workers, sinks = _workers(s, n, strom_broker.bootstrap_servers, app="reused")
        _interleave(workers, seed=n)
        assert_frame_equal(
            _union([o.to_frame() for o, _ in sinks]).sort("k", "window_start"), expected
        )


def test_owned_partitions_cover_each_once() -> None:
    for count, n in itertools.product(range(1, 7), range(1, 5)):
        shares = [owned(count, i, n) for i in range(n)]
        assert sorted(itertools.chain(*shares)) == list(range(count))


def test_route_is_a_function_of_the_key() -> None:
    batch = pl.DataFrame({"k": ["a", "b", "c", "a", "b", None], "n": [1, 2, 3, 4, 5, 6]})
    parts = route(batch, ["k"], 4)
    assert sum(f.height for f in parts.values()) == 6
    for frame in parts.values():
        for key in frame["k"].unique().to_list():
            assert all(
                key not in other["k"].to_list() for other in parts.values() if other is not frame
            )
    again = route(batch.reverse(), ["k"], 4)
    assert {p: set(f["n"].to_list()) for p, f in again.items()} == {
        p: set(f["n"].to_list()) for p, f in parts.items()
    }
    # equal values of different integer widths meet in one partition
    narrow = route(pl.DataFrame({"k": pl.Series(range(50), dtype=pl.Int16)}), ["k"], 4)
    wide = route(pl.DataFrame({"k": pl.Series(range(50), dtype=pl.Int64)}), ["k"], 4)
    assert {p: f["k"].to_list() for p, f in narrow.items()} == {
        p: f["k"].to_list() for p, f in wide.items()
    }
    assert list(route(batch, [], 4)) == [0]  # a global window: one partition


def test_merge_writers_waits_for_the_slowest_live_writer() -> None:
    unknown, fast, slow = Progress(), Progress(50_000), Progress(1_000)
    assert merge_writers([fast, unknown], MIN_WATERMARK) == MIN_WATERMARK
    assert merge_writers([fast, slow], MIN_WATERMARK) == 1_000
    assert merge_writers([fast, Progress(1_000, idle=True)], 0) == 50_000
    assert merge_writers([fast, Progress(ended=True)], 0) == 50_000
    assert merge_writers([Progress(ended=True)] * 2, 0) == MAX_WATERMARK
    assert merge_writers([Progress(5, idle=True)] * 2, 7) == 7  # all idle: held
    assert merge_writers([slow, fast], 2_000) == 2_000  # never backwards
    assert decode_progress(encode_progress(Progress(42, True, False))) == Progress(42, True, False)


class _Records:
    """A stand-in for the Kafka reader: hands out frames shaped like KafkaSource's raw rows."""

    def __init__(self, records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
        self.records = records
        self.next = 0

    def poll(self) -> pl.DataFrame | None:
        if self.next >= len(self.records):
            return None
        batch = self.records[self.next : self.next + 2]
        self.next += len(batch)
        return pl.DataFrame(
            {
                "_offset": range(self.next - len(batch), self.next),
                "value": [v for v, _ in batch],
                "_headers": [[{"key": k, "value": v} for k, v in h] for _, h in batch],
            },
            schema={"_offset": pl.Int64(), "value": pl.Binary(), "_headers": HEADERS_DTYPE},
        )

    def position(self) -> dict[str, int]:
        return {"offset": self.next}

    def seek(self, position: dict[str, int]) -> None:
        self.next = position["offset"]


def _record(
    run: str, writer: int, kind: bytes, value: bytes
) -> tuple[bytes, list[tuple[str, bytes]]]:
    return value, [
        ("strom-run", run.encode()),
        ("strom-writer", str(writer).encode()),
        ("strom-kind", kind),
    ]


def _ipc(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc_stream(buffer)
    return buffer.getvalue()


def test_a_partition_reader_delivers_rows_before_the_progress_after_them() -> None:
    source = RepartitionSource(
        "127.0.0.1:1", "t", [0], writers=2, run_id="now", schema=None, group_id="g"
    )
    rows = [_ipc(pl.DataFrame({"ts": [t]})) for t in range(4)]
    reader = _Records(
        [
            _record("old", 0, b"progress", encode_progress(Progress(ended=True))),
            _record("now", 0, b"rows", rows[0]),
            _record("now", 0, b"progress", encode_progress(Progress(9_000))),
            _record("now", 1, b"rows", rows[1]),
            _record("old", 1, b"rows", rows[2]),
            _record("now", 1, b"progress", encode_progress(Progress(500))),
            _record("now", 1, b"rows", rows[3]),
            _record("now", 0, b"progress", encode_progress(Progress(ended=True))),
            _record("now", 1, b"progress", encode_progress(Progress(ended=True))),
        ]
    )
    partition = RepartitionPartition(source, 0, reader)
    polls = []
    while (item := partition.poll()) is not END_OF_PARTITION:
        got = None if item is None else item["ts"].to_list()
        polls.append((got, partition.watermark()))
    assert polls == [
        ([0], None),  # writer 1 has said nothing yet: the watermark waits for it
        (None, None),  # writer 0's progress alone moves nothing
        ([1], None),  # writer 1's row comes before its progress: judged before it; the old
        (None, 500),  # run's row was skipped, and progress records are never rows
        ([3], 500),
    ]  # then both writers end: the partition ends


class _RunningCount(ProcessFunction):
    def process_element(self, row: dict[str, object], ctx: ProcessContext) -> None:
        seen = ctx.value_state("n")
        seen.update((seen.value() or 0) + 1)
        ctx.emit({"k": ctx.key, "ts": ctx.timestamp, "n": seen.value()})


def _chained(parts: list[list[pl.DataFrame]]) -> tuple[Pipeline, MemorySink, MemorySink]:
    p = Pipeline()
    events = p.source(MemorySource(parts), timestamp="ts", max_out_of_orderness_ms=1_500)
    per_key = events.key_by("k").window(Tumbling(2_000)).agg(agg.count())
    per_key.window(Tumbling(6_000)).agg(agg.sum("count"), agg.count("k")).sink(
        totals := MemorySink()
    )
    events.key_by("k").process(
        _RunningCount(), output_schema={"k": pl.String, "ts": pl.Int64, "n": pl.Int64}
    ).sink(running := MemorySink())
    return p, totals, running


def test_chained_keyed_steps_and_process_functions_equal_bounded(strom_broker: Broker) -> None:
    """Two repartition topics: by key (shared by the window and the process function, which
    re-key the same stream the same way), and every window result into one global window (whose
    event time, ``window_end``, the second stage's progress records carry)."""
    rng = random.Random(3)
    ts = rng.sample(range(60_000), 600)  # distinct times: per-key order is then unambiguous
    frame = pl.DataFrame({"k": [rng.choice("pqrstu") for _ in ts], "ts": sorted(ts)})
    frame = frame.with_columns(pl.col("ts") - pl.Series([rng.randrange(1_500) for _ in ts]))
    parts = [[frame[p::3][i : i + 25] for i in range(0, 200, 25)] for p in range(3)]
    q, totals, running = _chained(parts)
    run_bounded(q)
    run = next(_runs)
    outputs = []
    workers = []
    for i in range(2):
        p, t, r = _chained(parts)
        outputs.append((t, r))
        config = WorkerConfig(i, 2, f"chain{run}", f"run{run}", strom_broker.bootstrap_servers)
        workers.append(Worker(p.plan(), config))
    assert len(workers[0].topics) == 2
    _interleave(workers, seed=5)
    got_totals = _union([t.to_frame() for t, _ in outputs]).drop("is_update")
    assert got_totals.sort("window_start").equals(
        totals.to_frame().drop("is_update").sort("window_start")
    )
    got_running = _union([r.to_frame() for _, r in outputs])
    assert got_running.sort("k", "ts").equals(running.to_frame().sort("k", "ts"))


def _joined(
    left: list[list[pl.DataFrame]], right: list[list[pl.DataFrame]]
) -> tuple[Pipeline, MemorySink]:
    p = Pipeline()
    clicks = p.source(MemorySource(left), timestamp="ts", max_out_of_orderness_ms=1_000)
    views = p.source(MemorySource(right), timestamp="at", max_out_of_orderness_ms=1_000)
    joined = clicks.interval_join(
        views, left_on="user", right_on="viewer", lower_ms=-2_000, upper_ms=1_000
    )
    joined.sink(out := MemorySink())
    return p, out


def test_an_interval_join_repartitions_both_sides(strom_broker: Broker) -> None:
    rng = random.Random(11)

    def side(ts: str, key: str, partitions: int) -> list[list[pl.DataFrame]]:
        times = sorted(rng.sample(range(40_000), 240))
        frame = pl.DataFrame(
            {key: [rng.randrange(12) for _ in times], ts: times, f"{ts}_n": range(240)}
        ).with_columns(pl.col(ts) - pl.Series([rng.randrange(1_000) for _ in times]))
        return [
            [frame[p::partitions][i : i + 20] for i in range(0, 240 // partitions, 20)]
            for p in range(partitions)
        ]

    left, right = side("ts", "user", 2), side("at", "viewer", 3)
    q, expected = _joined(left, right)
    run_bounded(q)
    run = next(_runs)
    outputs, workers = [], []
    for i in range(2):
        p, out = _joined(left, right)
        outputs.append(out)
        config = WorkerConfig(i, 2, f"join{run}", f"run{run}", strom_broker.bootstrap_servers)
        workers.append(Worker(p.plan(), config))
    assert len(workers[0].topics) == 2  # one per side, each keyed by its own key column
    _interleave(workers, seed=2)
    got = _union([o.to_frame() for o in outputs])
    order = ["ts_n", "at_n"]
    assert expected.to_frame().height > 50
    assert got.sort(order).equals(expected.to_frame().sort(order))
