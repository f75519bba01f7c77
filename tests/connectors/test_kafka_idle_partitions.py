"""A record flows through while the source's other partitions are idle: polls never wait, and
an idle round ends in one wait for the whole source, which records end (strom broker)."""

from __future__ import annotations

import json
import time

import polars as pl
from connector_helpers import Sent, consume_all, create_topic, produce

from strom.broker import Broker
from strom.connectors import KafkaSink, KafkaSource
from strom.pipeline import Pipeline
from strom.runtime import StreamingExecutor

EVENT = {"n": pl.Int64}


class _CountingSource(KafkaSource):
    """A KafkaSource that counts the executor's waits on it (and otherwise is one)."""

    waits = 0

    def wait(self, timeout_s: float) -> bool:
        self.waits += 1
        return super().wait(timeout_s)


def test_wait_reports_records_arriving_on_any_partition(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "w", 3)
    source = KafkaSource(bootstrap, "w", schema=EVENT, poll_timeout_ms=50)
    readers = [source.open_partition(p) for p in range(3)]
    assert [r.poll() for r in readers] == [None, None, None]
    assert source.wait(0.05) is False  # nothing was written: the wait runs out
    produce(bootstrap, "w", [Sent(2, json.dumps({"n": 7}).encode())])
    deadline = time.monotonic() + 30
    while not source.wait(1.0):  # one wait covers all three partitions
        assert time.monotonic() < deadline, "the record never arrived"
    assert source.wait(1.0) is True  # buffered: true at once, nothing consumed
    got = readers[2].poll()
    assert isinstance(got, pl.DataFrame) and got["n"].to_list() == [7]
    source.close()


def test_a_record_goes_through_while_other_partitions_are_idle(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "idle-in", 3)
    create_topic(bootstrap, "idle-out", 1)
    source = _CountingSource(bootstrap, "idle-in", schema=EVENT)
    pipeline = Pipeline()
    pipeline.source(source).filter(pl.col("n") > 0).select("n").sink(
        KafkaSink(bootstrap, "idle-out")
    )
    executor = StreamingExecutor(pipeline)
    steps = 0
    for _ in range(3):  # idle rounds first: they wait instead of spinning
        assert executor.step()
        steps += 1
    assert source.waits == steps
    produce(bootstrap, "idle-in", [Sent(1, json.dumps({"n": n}).encode()) for n in (0, 5)])
    deadline = time.monotonic() + 30
    rows = 0
    while rows < 2:
        assert time.monotonic() < deadline, "the records never reached the engine"
        assert executor.step()
        steps += 1
        rows = source.metrics().rows_out
    assert source.waits <= steps  # at most one wait a round, whatever the partition count
    executor.close()  # the sink flushes
    assert [json.loads(g.value or b"") for g in consume_all(bootstrap, "idle-out", 1)] == [{"n": 5}]
    assert source.positions() == {0: 0, 1: 2, 2: 0}
