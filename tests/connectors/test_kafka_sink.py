"""KafkaSink: rows written as JSON records come back equal; failed deliveries raise."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket

import polars as pl
import pytest
from connector_helpers import consume_all, create_topic

from strom.broker import Broker
from strom.connectors import KafkaConnectorError, KafkaSink, KafkaSource, MemorySink, MemorySource
from strom.connectors.kafka import sink as sink_module
from strom.pipeline import Pipeline
from strom.runtime import StreamingExecutor


def _rows(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device": [f"d{i % 4}" for i in range(n)],
            "count": list(range(n)),
            "temp": [i / 8 for i in range(n)],
            "ok": [i % 2 == 0 for i in range(n)],
            "note": [None if i % 5 == 0 else f"é\n{i}" for i in range(n)],
            "blob": [bytes([i % 256, 0xFF]) for i in range(n)],
            "at": [dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(n)],
        }
    )


def test_round_trip_through_a_pipeline(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "out", 3)
    rows = _rows(500)
    p = Pipeline()
    p.source(MemorySource([[rows.slice(i, 50) for i in range(0, 500, 50)]])).sink(
        sink := KafkaSink(bootstrap, "out", key="device")
    )
    StreamingExecutor(p).run()
    assert (sink.delivered, sink.failed) == (500, 0)

    got = consume_all(bootstrap, "out", 3)
    assert len(got) == 500
    partitions_of: dict[bytes, set[int]] = {}
    decoded = []
    for g in got:
        assert g.key is not None and g.value is not None
        partitions_of.setdefault(g.key, set()).add(g.partition)
        value = json.loads(g.value)
        assert g.key == value["device"].encode()  # the key column stays in the value
        decoded.append(value)
    assert all(len(ps) == 1 for ps in partitions_of.values())  # one key, one partition
    back = pl.DataFrame(decoded).sort("count")
    assert back["device"].to_list() == rows["device"].to_list()
    assert back["temp"].to_list() == rows["temp"].to_list()
    assert back["ok"].to_list() == rows["ok"].to_list()
    assert back["note"].to_list() == rows["note"].to_list()
    assert [base64.b64decode(b) for b in back["blob"]] == rows["blob"].to_list()
    assert back["at"].to_list() == [str(a) for a in rows["at"].to_list()]


def test_kafka_to_kafka_raw_keeps_bytes(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "in", 1)
    create_topic(bootstrap, "copy", 1)
    values = [b"\x00\x01", b"plain", b"\xff" * 3]
    p = Pipeline()
    p.source(MemorySource([[{"value": v, "k": i} for i, v in enumerate(values)]])).sink(
        KafkaSink(bootstrap, "in", key="k", value_format="raw")
    )
    StreamingExecutor(p).run()
    q = Pipeline()
    q.source(KafkaSource(bootstrap, "in", value_format="raw", bounded=True)).sink(
        KafkaSink(bootstrap, "copy", key="_key", value_format="raw")
    )
    StreamingExecutor(q).run()
    got = consume_all(bootstrap, "copy", 1)
    assert [(g.key, g.value) for g in got] == [(str(i).encode(), v) for i, v in enumerate(values)]


def test_undeliverable_records_fail_close() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    sink = KafkaSink(closed, "t", producer_config={"message.timeout.ms": 500})
    sink.open()
    sink.write(pl.DataFrame({"n": [1, 2, 3]}))
    with pytest.raises(KafkaConnectorError, match="3 record"):
        sink.close()
    assert (sink.failed, sink.delivered) == (3, 0)  # failures are reported, one by one


def test_nested_binary_is_refused_clearly(strom_broker: Broker) -> None:
    sink = KafkaSink(strom_broker.bootstrap_servers, "t")
    sink.open()
    with pytest.raises(NotImplementedError, match="Binary inside lists or structs"):
        sink.write(pl.DataFrame({"b": [[b"x"]]}))
    sink.close()
    out = MemorySink()
    assert out.batches == []


def test_records_left_unacknowledged_by_close_are_not_counted_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(sink_module, "FLUSH_TIMEOUT_S", 0.5)  # close gives up before they fail
    sink = KafkaSink(closed, "t", producer_config={"message.timeout.ms": 60_000})
    sink.open()
    sink.write(pl.DataFrame({"n": [1, 2, 3]}))
    with pytest.raises(KafkaConnectorError, match="3 record"):
        sink.close()
    assert (sink.produced, sink.delivered, sink.metrics().rows_out) == (3, 0, 0)
