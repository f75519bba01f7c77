"""KafkaSource against a real in-process broker, each test with both clients (strom, librdkafka)."""

from __future__ import annotations

import functools
import json
import logging
import socket
import time
from collections.abc import Callable

import polars as pl
import pytest
from connector_helpers import Sent, create_topic, produce
from polars.testing import assert_frame_equal

from strom.bounded import run_bounded
from strom.broker import Broker
from strom.connectors import (
    DEAD_LETTER_SCHEMA,
    KafkaConnectorError,
    KafkaSource,
    MemorySink,
    MemorySource,
)
from strom.pipeline import END_OF_PARTITION, Pipeline, PlanError, Source, Tumbling, agg
from strom.runtime import StreamingExecutor

SCHEMA = pl.Schema(
    {"ts": pl.Int64(), "device": pl.String(), "temp": pl.Float64(), "vibration": pl.Float64()}
)
PARTITIONS = 3
BASE_TS = 1_700_000_000_000  # record timestamps (ms), distinct from the events' own ts

#: (partition, value, exact dead-letter reason)
POISON: list[tuple[int, bytes | None, str]] = [
    (
        0,
        b'{"ts": 5, "device": "d1", "temp": 1.0',
        "invalid JSON: Expecting ',' delimiter: line 1 column 38 (char 37)",
    ),
    (
        1,
        b'{"ts": "soon", "device": "d1", "temp": 1.0, "vibration": 0.1}',
        "does not match the schema: cannot parse 'soon' (string) as Int64",
    ),
    (2, b'{"ts": 7, "device": "d2", "vibration": 0.1}', "missing or null field(s): temp"),
    (
        0,
        b'{"ts": 8, "device": "d\xe9", "temp": 1.0, "vibration": 0.1}',
        "not UTF-8: invalid continuation byte at byte 22",
    ),
    (1, None, "empty value"),
    (2, b"[1, 2, 3]", "not a JSON object: an array"),
    (
        0,
        b'{"ts": 9, "device": "d3", "temp": true, "vibration": 0.1}',
        "does not match the schema: cannot parse 'true' (bool) as Float64",
    ),
]


@pytest.fixture(params=["strom", "librdkafka"])
def kafka_source(request: pytest.FixtureRequest) -> Callable[..., KafkaSource]:
    """``KafkaSource`` with ``client=`` set to each client in turn."""
    return functools.partial(KafkaSource, client=request.param)


def _events(n: int) -> list[tuple[int, dict[str, object]]]:
    """(partition, event): per partition ts grows with disorder of at most 2 s."""
    out = []
    for i in range(n):
        ts = i * 450 + (1_900 if i % 7 == 3 else 0) - (1_500 if i % 11 == 5 else 0)
        event = {"ts": ts, "device": f"d{i % 5}", "temp": (i % 40) * 0.5, "vibration": i % 13 / 4}
        out.append((i % PARTITIONS, event))
    return out


def _fill(bootstrap: str, topic: str, n: int) -> tuple[list[list[dict[str, object]]], list[Sent]]:
    """Produce n events with the poison interleaved; returns valid events per partition."""
    create_topic(bootstrap, topic, PARTITIONS)
    sent: list[Sent] = []
    events = _events(n)
    poison_at = {n * (k + 1) // (len(POISON) + 1): k for k in range(len(POISON))}
    for i, (partition, event) in enumerate(events):
        if i in poison_at:
            p, value, _ = POISON[poison_at[i]]
            sent.append(Sent(p, value, timestamp=BASE_TS + len(sent)))
        sent.append(Sent(partition, json.dumps(event).encode(), timestamp=BASE_TS + len(sent)))
    produce(bootstrap, topic, sent)
    valid: list[list[dict[str, object]]] = [[] for _ in range(PARTITIONS)]
    for partition, event in events:
        valid[partition].append(event)
    return valid, sent


def _windows(source: Source) -> tuple[Pipeline, MemorySink]:
    p = Pipeline()
    out = (
        p.source(source, timestamp="ts", max_out_of_orderness_ms=3_000)
        .filter(pl.col("temp") >= 0)
        .key_by("device")
        .window(Tumbling(10_000))
        .agg(agg.count(), agg.mean("temp"), agg.max("vibration"), agg.last("temp"))
    )
    out.sink(sink := MemorySink())
    return p, sink


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("device", "window_start")


def test_windowed_pipeline_over_kafka_equals_memory_and_bounded(
    kafka_source: Callable[..., KafkaSource], strom_broker: Broker
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    valid, sent = _fill(bootstrap, "readings", 1_200)

    dead = MemorySink()
    source = kafka_source(
        bootstrap, "readings", schema=SCHEMA, bounded=True, dead_letter=dead, max_batch_records=97
    )
    p, streamed = _windows(source)
    executor = StreamingExecutor(p)
    executor.run()

    q, from_memory = _windows(MemorySource([[batch] for batch in valid], schema=SCHEMA))
    StreamingExecutor(q).run()
    r, bounded = _windows(kafka_source(bootstrap, "readings", schema=SCHEMA, bounded=True))
    run_bounded(r)

    result = _sorted(streamed.to_frame())
    assert not result["is_update"].any()  # in-bound disorder: every window emitted once
    assert_frame_equal(result, _sorted(from_memory.to_frame()))
    assert_frame_equal(result, _sorted(bounded.to_frame()))
    assert int(result["count"].sum()) == sum(len(v) for v in valid)  # nothing lost

    # every poison record is a dead letter, exactly, and processing went on past it
    placed = {id(s): i for i, s in enumerate(sent)}
    offsets = _offsets(sent)
    expected = []
    for partition, value, reason in POISON:
        s = next(x for x in sent if x.value == value and x.partition == partition)
        expected.append((reason, "readings", partition, offsets[placed[id(s)]], s.timestamp, value))
    letters = dead.to_frame()
    assert letters.schema == DEAD_LETTER_SCHEMA
    assert sorted(letters.rows(), key=lambda r: (r[2], r[3])) == sorted(
        expected, key=lambda r: (r[2], r[3])
    )
    assert dead.closed  # closed once every partition ended

    ends = {p: sum(1 for s in sent if s.partition == p) for p in range(PARTITIONS)}
    assert source.positions() == ends
    m = source.metrics()
    assert (m.rows_in, m.rows_out, m.dead_letters) == (
        len(sent),
        len(sent) - len(POISON),
        len(POISON),
    )
    assert m.lag == 0  # read to the end
    assert executor.metrics()["source0"] == m  # the source speaks for itself


def _offsets(sent: list[Sent]) -> list[int]:
    """Each record's offset: records of a partition get consecutive offsets in send order."""
    next_offset = dict.fromkeys(range(PARTITIONS), 0)
    out = []
    for s in sent:
        out.append(next_offset[s.partition])
        next_offset[s.partition] += 1
    return out


def test_metadata_columns_and_raw_values(
    kafka_source: Callable[..., KafkaSource], strom_broker: Broker
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "raw", 2)
    sent = [
        Sent(0, b"\x00binary\xff", key=b"k0", timestamp=1_000, headers=[("h", b"v"), ("h", b"w")]),
        Sent(1, None, key=None, timestamp=2_000),
        Sent(0, b"second", key=b"k2", timestamp=3_000),
    ]
    placed = produce(bootstrap, "raw", sent)
    source = kafka_source(bootstrap, "raw", value_format="raw", bounded=True, headers=True)
    p = Pipeline()
    p.source(source).sink(sink := MemorySink())
    StreamingExecutor(p).run()
    got = sink.to_frame().sort("_partition", "_offset")
    assert got.schema == source.schema()
    assert list(got.schema) == [
        "value", "_key", "_topic", "_partition", "_offset", "_timestamp", "_headers"
    ]  # fmt: skip
    expected = sorted(
        (
            (s.value, s.key, "raw", part, off, s.timestamp, s.headers or [])
            for s, (part, off) in zip(sent, placed, strict=True)
        ),
        key=lambda row: (row[3], row[4]),
    )
    rows = [(*r[:6], [(h["key"], h["value"]) for h in (r[6] or [])]) for r in got.rows()]
    assert rows == expected


def test_committed_start_resumes_after_commit(
    kafka_source: Callable[..., KafkaSource], strom_broker: Broker
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "log", 2)
    first = [Sent(i % 2, json.dumps({"n": i}).encode()) for i in range(10)]
    produce(bootstrap, "log", first)
    schema = {"n": pl.Int64}

    def read() -> tuple[list[int], KafkaSource]:
        src = kafka_source(
            bootstrap, "log", schema=schema, group_id="g", start="committed", bounded=True
        )
        p = Pipeline()
        p.source(src).sink(sink := MemorySink())
        StreamingExecutor(p).run()
        frame = sink.to_frame()
        return (sorted(frame["n"].to_list()) if frame.height else []), src

    seen, src = read()
    assert seen == list(range(10))
    src.commit()
    produce(bootstrap, "log", [Sent(i % 2, json.dumps({"n": i}).encode()) for i in range(10, 15)])
    seen, src = read()
    assert seen == list(range(10, 15))
    assert src.positions() == {0: 8, 1: 7}
    seen, _ = read()  # nothing was committed by the second read
    assert seen == list(range(10, 15))


def test_latest_bounded_reads_nothing(
    kafka_source: Callable[..., KafkaSource], strom_broker: Broker
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "old", 1)
    produce(bootstrap, "old", [Sent(0, b'{"n": 1}')])
    source = kafka_source(bootstrap, "old", schema={"n": pl.Int64}, start="latest", bounded=True)
    assert source.open_partition(0).poll() is END_OF_PARTITION
    assert source.positions() == {0: 1}


def test_unbounded_source_waits_for_new_records(
    kafka_source: Callable[..., KafkaSource], strom_broker: Broker
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "live", 1)
    source = kafka_source(bootstrap, "live", schema={"n": pl.Int64}, poll_timeout_ms=50)
    reader = source.open_partition(0)
    assert reader.poll() is None  # empty and unbounded: no data now, never the end
    produce(bootstrap, "live", [Sent(0, json.dumps({"n": i}).encode()) for i in range(3)])
    got: list[int] = []
    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        item = reader.poll()
        assert item is not END_OF_PARTITION
        if isinstance(item, pl.DataFrame):
            got += item["n"].to_list()
    assert got == [0, 1, 2]
    assert source.positions() == {0: 3}
    source.close()
    with pytest.raises(RuntimeError, match="closed"):
        reader.poll()


def test_without_dead_letter_sink_bad_records_are_logged_and_counted(
    kafka_source: Callable[..., KafkaSource], strom_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "dirty", 1)
    produce(bootstrap, "dirty", [Sent(0, b'{"n": 1}'), Sent(0, b"oops"), Sent(0, b'{"n": 2}')])
    source = kafka_source(bootstrap, "dirty", schema={"n": pl.Int64}, bounded=True)
    p = Pipeline()
    p.source(source).sink(sink := MemorySink())
    with caplog.at_level(logging.WARNING, logger="strom.connectors"):
        StreamingExecutor(p).run()
    assert sink.to_frame()["n"].to_list() == [1, 2]
    assert source.metrics().dead_letters == 1
    warnings = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(warnings) == 1 and "offset 1: invalid JSON" in warnings[0]


def test_batches_respect_max_batch_records(
    kafka_source: Callable[..., KafkaSource], strom_broker: Broker
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "many", 2)
    produce(bootstrap, "many", [Sent(i % 2, json.dumps({"n": i}).encode()) for i in range(100)])
    source = kafka_source(
        bootstrap, "many", schema={"n": pl.Int64}, bounded=True, max_batch_records=7
    )
    # polled directly, as the executor does (it may merge a round's batches for a stateless
    # pipeline): every unfinished partition once per round, then the source's wait if a round
    # found nothing (polls never wait). Reading one partition to its end before the other
    # could stall: the fetcher stops fetching while max_batch_records wait in any buffer.
    batches: list[pl.DataFrame] = []
    readers = [source.open_partition(i) for i in range(2)]
    while readers:
        found = False
        for reader in list(readers):
            item = reader.poll()
            if item is END_OF_PARTITION:
                readers.remove(reader)
            elif item is not None:
                batches.append(item)
                found = True
        if readers and not found:
            source.wait(0.05)
    assert max(b.height for b in batches) <= 7
    assert sorted(pl.concat(batches)["n"].to_list()) == list(range(100))


def test_clear_errors(kafka_source: Callable[..., KafkaSource], strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    with pytest.raises(KafkaConnectorError, match="topic 'nope' does not exist"):
        kafka_source(bootstrap, "nope", schema={"n": pl.Int64}).partition_count()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(KafkaConnectorError, match=f"cannot reach the Kafka cluster at {closed}"):
        kafka_source(closed, "t", schema={"n": pl.Int64}).partition_count()
    create_topic(bootstrap, "t", 1)
    with pytest.raises(PlanError, match="unbounded"):
        kafka_source(bootstrap, "t", schema={"n": pl.Int64}).scan_partition(0)
    with pytest.raises(ValueError, match="needs schema"):
        kafka_source(bootstrap, "t")
    with pytest.raises(ValueError, match="clash"):
        kafka_source(bootstrap, "t", schema={"_offset": pl.Int64})
    with pytest.raises(ValueError, match="group_id"):
        kafka_source(bootstrap, "t", schema={"n": pl.Int64}, start="committed")


def test_reopening_a_partition_supersedes_its_reader(
    kafka_source: Callable[..., KafkaSource], strom_broker: Broker
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "again", 1)
    produce(bootstrap, "again", [Sent(0, json.dumps({"n": i}).encode()) for i in range(4)])
    dead = MemorySink()
    source = kafka_source(
        bootstrap, "again", schema={"n": pl.Int64}, bounded=True, dead_letter=dead
    )
    first = source.open_partition(0)
    second = source.open_partition(0)
    with pytest.raises(RuntimeError, match="reopened"):
        first.poll()
    assert source.scan_partition(0).collect()["n"].to_list() == [0, 1, 2, 3]  # reads it anew
    with pytest.raises(RuntimeError, match="reopened"):
        second.poll()
    assert source.positions() == {0: 4}
