"""KafkaSink(guarantee="exactly-once"): a transaction per checkpoint, decided by its commit.

In-process checks against a real strom broker (the kill -9 runs are in
``tests/runtime/checkpoints/test_kafka_exactly_once.py``): a checkpointed run's records are
visible under read_committed exactly once and carry the source's offsets and the checkpoint
record; an aborted checkpoint is invisible under read_committed (visible read_uncommitted); a
second process with the same transactional id fences the first; bad configurations are clear
errors.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from connector_helpers import Sent, create_topic, produce

from strom.broker import Broker
from strom.connectors import (
    KafkaConnectorError,
    KafkaSink,
    KafkaSource,
    MemorySource,
    SQLiteSink,
)
from strom.connectors.kafka.transaction import checkpoint_group
from strom.engine.contracts import FencedError
from strom.pipeline import Pipeline
from strom.runtime.checkpoints import CheckpointError
from strom.runtime.executor import run_streaming

SCHEMA = {"k": pl.String, "v": pl.Int64}


def _read(bootstrap: str, topic: str, partitions: int, isolation: str) -> list[int]:
    """Every record's ``v``, per partition in offset order, partitions one after the other."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                         "enable.partition.eof": True, "isolation.level": isolation})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got: dict[int, list[int]] = {p: [] for p in range(partitions)}
    ended: set[int] = set()
    try:
        while len(ended) < partitions:
            for m in consumer.consume(500, timeout=1):
                error = m.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    ended.add(m.partition() or 0)
                else:
                    got[m.partition() or 0].append(json.loads(m.value() or b"")["v"])
    finally:
        consumer.close()
    return [v for p in range(partitions) for v in got[p]]


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
    finally:
        consumer.close()
    return [tp.offset for tp in found]


def _sink(bootstrap: str, topic: str = "out", tid: str = "test.out") -> KafkaSink:
    return KafkaSink(bootstrap, topic, key="k", guarantee="exactly-once", transactional_id=tid)


def test_a_checkpointed_run_commits_records_offsets_and_the_checkpoint(
    strom_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "in", 3)
    create_topic(bootstrap, "out", 2)
    produce(bootstrap, "in", [Sent(i % 3, json.dumps({"k": f"k{i % 5}", "v": i}).encode())
                              for i in range(300)])  # fmt: skip
    p = Pipeline()
    source = KafkaSource(bootstrap, "in", schema=SCHEMA, bounded=True, group_id="app",
                         max_batch_records=20)  # fmt: skip
    p.source(source).select("k", "v").sink(sink := _sink(bootstrap))
    run_streaming(p, checkpoint_dir=tmp_path / "ckpt", checkpoint_interval=0)

    assert sorted(_read(bootstrap, "out", 2, "read_committed")) == list(range(300))
    assert _committed(bootstrap, "app", "in", 3) == [100, 100, 100]  # the source's offsets
    last = sink.last_committed
    assert last is not None and last > 1
    [record] = _committed(bootstrap, checkpoint_group("test.out"), "out", 1)
    assert record == last  # the checkpoint record is the last committed checkpoint
    again = _sink(bootstrap)
    again.open()
    try:
        assert again.committed_checkpoint() == last
    finally:
        again.close()


def test_an_aborted_checkpoint_is_invisible_to_read_committed(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "out", 2)
    sink = _sink(bootstrap)
    sink.open()
    sink.recover(None)
    assert sink.committed_checkpoint() is None
    sink.write(pl.DataFrame({"k": ["a", "b"], "v": [1, 2]}))
    sink.pre_commit(1)
    sink.commit(1)
    sink.write(pl.DataFrame({"k": ["a", "b"], "v": [3, 4]}))
    sink.pre_commit(2)
    sink.abort(2)
    sink.close()
    assert sorted(_read(bootstrap, "out", 2, "read_committed")) == [1, 2]
    assert sorted(_read(bootstrap, "out", 2, "read_uncommitted")) == [1, 2, 3, 4]
    later = _sink(bootstrap)
    later.open()
    assert later.committed_checkpoint() == 1
    later.close()


def test_a_second_process_fences_the_first(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "out", 2)
    zombie = _sink(bootstrap)
    zombie.open()
    zombie.recover(None)
    zombie.write(pl.DataFrame({"k": ["a"], "v": [1]}))
    zombie.pre_commit(1)
    successor = _sink(bootstrap)
    successor.open()  # fences the zombie and aborts its open transaction
    assert successor.committed_checkpoint() is None
    with pytest.raises(FencedError, match="fenced: another process initialized"):
        zombie.commit(1)
    with pytest.raises(KafkaConnectorError, match="fenced"):
        zombie.write(pl.DataFrame({"k": ["b"], "v": [2]}))
    zombie.close()
    successor.recover(None)
    successor.write(pl.DataFrame({"k": ["c"], "v": [3]}))
    successor.pre_commit(1)
    successor.commit(1)
    successor.close()
    assert _read(bootstrap, "out", 2, "read_committed") == [3]


def test_exactly_once_needs_checkpoints_and_one_deciding_sink(
    strom_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "out", 1)
    sink = _sink(bootstrap)
    sink.open()
    with pytest.raises(RuntimeError, match="writes only in a run with checkpoints"):
        sink.write(pl.DataFrame({"k": ["a"], "v": [1]}))
    sink.close()

    p = Pipeline()
    rows = p.source(MemorySource([[pl.DataFrame({"k": ["a"], "v": [1]})]]))
    rows.sink(_sink(bootstrap, tid="one"))
    rows.sink(_sink(bootstrap, tid="two"))
    with pytest.raises(CheckpointError, match="at most one sink can decide"):
        run_streaming(p, checkpoint_dir=tmp_path / "ckpt")


def test_at_least_once_kafka_sink_does_not_decide(strom_broker: Broker, tmp_path: Path) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "out", 1)
    p = Pipeline()
    rows = p.source(MemorySource([[pl.DataFrame({"k": ["a"], "v": [1]})]]))
    rows.sink(KafkaSink(bootstrap, "out"))
    rows.sink(KafkaSink(bootstrap, "out"))  # two at-least-once sinks: neither decides
    run_streaming(p, checkpoint_dir=tmp_path / "ckpt", guarantee="at-least-once")
    assert _read(bootstrap, "out", 1, "read_committed") == [1, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guarantee": "exactly-once"}, "needs transactional_id"),
        ({"transactional_id": "x"}, "for guarantee='exactly-once' only"),
        ({"guarantee": "twice"}, "guarantee must be"),
        ({"guarantee": "exactly-once", "transactional_id": "x", "transaction_timeout_ms": 5},
         "transaction_timeout_ms"),
    ],
)  # fmt: skip
def test_bad_configuration_is_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSink("127.0.0.1:1", "out", **kwargs)  # type: ignore[arg-type]


def test_writes_between_pre_commit_and_commit_are_the_next_checkpoints(
    strom_broker: Broker,
) -> None:
    """While checkpoint 1's files are written the pipeline runs on: what it writes then is not
    in checkpoint 1's transaction (aborting checkpoint 2 discards it)."""
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "out", 2)
    sink = _sink(bootstrap)
    sink.open()
    sink.recover(None)
    sink.write(pl.DataFrame({"k": ["a"], "v": [1]}))
    sink.pre_commit(1)
    sink.write(pl.DataFrame({"k": ["b"], "v": [2]}))  # checkpoint 2's
    sink.commit(1)
    sink.pre_commit(2)
    sink.abort(2)
    sink.close()
    assert _read(bootstrap, "out", 2, "read_committed") == [1]
    assert sorted(_read(bootstrap, "out", 2, "read_uncommitted")) == [1, 2]


@pytest.mark.parametrize("client", ["strom", "librdkafka"])
def test_exactly_once_dead_letters_survive_the_end_of_a_bounded_source(
    strom_broker: Broker, tmp_path: Path, client: str
) -> None:
    """The dead-letter sink of a bounded source stays open past the source's end, so the run's
    final checkpoint publishes its last staged rows (it used to be closed first, unpublished)."""
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "in", 2)
    create_topic(bootstrap, "out", 2)
    good = [Sent(i % 2, json.dumps({"k": "a", "v": i}).encode()) for i in range(40)]
    bad = [Sent(i % 2, b"not json %d" % i) for i in range(5)]
    produce(bootstrap, "in", good + bad)  # the undecodable ones last: past every checkpoint
    db = tmp_path / "letters.db"
    letters = SQLiteSink(db, "dead_letters", guarantee="exactly-once")
    p = Pipeline()
    source = KafkaSource(bootstrap, "in", schema=SCHEMA, bounded=True, client=client,
                         dead_letter=letters, max_batch_records=10)  # fmt: skip
    p.source(source).sink(_sink(bootstrap, tid=f"letters.{client}"))
    run_streaming(p, checkpoint_dir=tmp_path / "ckpt", checkpoint_interval=0)
    assert sorted(_read(bootstrap, "out", 2, "read_committed")) == list(range(40))
    with sqlite3.connect(db) as conn:
        raws = sorted(r[0] for r in conn.execute("SELECT raw FROM dead_letters"))
    assert raws == sorted(b"not json %d" % i for i in range(5))


def test_a_first_checkpoint_before_any_record_to_a_new_topic(strom_broker: Broker) -> None:
    """The checkpoint record is an offset of the sink topic's partition 0: opening the sink
    asks for the topic (created on first use), so a checkpoint before its first record works."""
    sink = _sink(strom_broker.bootstrap_servers, topic="fresh", tid="fresh.out")
    sink.open()
    try:
        sink.recover(None)
        sink.pre_commit(1)
        sink.commit(1)
        assert sink.committed_checkpoint() == 1
    finally:
        sink.close()
