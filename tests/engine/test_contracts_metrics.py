"""The metrics contract: operators, sources and sinks report :class:`Metrics`; an executor gathers
them by component, letting a source or sink that knows more speak for itself."""

from __future__ import annotations

import json
import uuid

import polars as pl
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from strom.broker import Broker
from strom.connectors import KafkaSource, MemorySink, MemorySource
from strom.engine.contracts import END_OF_PARTITION
from strom.pipeline import Pipeline, Tumbling, agg
from strom.runtime import MAX_WATERMARK, StreamingExecutor


def test_an_executor_reports_every_component() -> None:
    rows = [{"k": "a", "ts": 0, "v": 1}, {"k": "b", "ts": 5_000, "v": 2}]
    late = [{"k": "a", "ts": 100, "v": 3}]
    p = Pipeline()
    windows = p.source(MemorySource([[rows, late]]), timestamp="ts").key_by("k")
    result = windows.window(Tumbling(1_000)).agg(agg.sum("v"))
    result.sink(MemorySink())
    result.late().sink(MemorySink())
    ex = StreamingExecutor(p)
    ex.step()
    ex.step()
    during = ex.metrics()
    assert list(during) == ["source0", "1:KeyBy", "2:WindowAgg", "3:Sink", "4:Late", "5:Sink"]
    window = during["2:WindowAgg"]
    assert (window.rows_in, window.rows_out, window.late_rows) == (3, 1, 1)
    assert (window.watermark, window.state_size) == (5_000, 1)  # b's window is still open
    assert (during["source0"].rows_out, during["source0"].state_size) == (3, None)
    assert during["1:KeyBy"].watermark is None  # stateless: no event time of its own
    assert during["5:Sink"].rows_out == 1  # the late row, written
    ex.run()
    after = ex.metrics()
    assert (after["2:WindowAgg"].watermark, after["2:WindowAgg"].state_size) == (MAX_WATERMARK, 0)


@pytest.mark.parametrize("client", ["strom", "librdkafka"])
def test_kafka_lag_is_the_high_watermark_minus_the_position(
    strom_broker: Broker, client: str
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    topic = f"lag-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(15)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(100):
        producer.produce(topic, json.dumps({"i": i}).encode(), partition=0)
    assert producer.flush(15) == 0
    source = KafkaSource(bootstrap, topic, schema={"i": pl.Int64}, client=client,  # type: ignore[arg-type]
                         max_batch_records=10, poll_timeout_ms=50)  # fmt: skip
    reader = source.open_partition(0)
    assert source.metrics().lag is None  # nothing fetched yet: the high watermark is unknown
    got = 0
    while got < 10:
        item = reader.poll()
        assert item is not END_OF_PARTITION
        got += 0 if item is None else item.height
        if item is None:
            source.wait(0.1)  # polls never wait
    m = source.metrics()
    assert (m.rows_in, m.rows_out, m.lag) == (10, 10, 90)
    while got < 100:
        item = reader.poll()
        got += 0 if item is None or item is END_OF_PARTITION else item.height
        if item is None:
            source.wait(0.1)
    assert source.metrics().lag == 0
    source.close()
