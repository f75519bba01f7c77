"""The sink contract: every sink has the two-phase hooks, and once ``pre_commit`` has returned what
was written is durable and visible to others (another SQLite connection, a Kafka consumer, the
files on disk). At-least-once: ``commit`` publishes nothing new, ``abort`` takes nothing back.
An executor pre-commits every sink of its run, the sources' dead-letter outputs included.
(PostgreSQL: ``tests/connectors/test_postgres_sink.py``.)"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from polars.testing import assert_frame_equal

from strom.broker import Broker
from strom.connectors import (
    ConsoleSink,
    FileSink,
    KafkaSink,
    KafkaSource,
    MemorySink,
    SQLiteSink,
)
from strom.connectors.deadletter import DeadLetterOutput, dead_letter_frame
from strom.engine.contracts import AtLeastOnceSink, Sink
from strom.pipeline import Pipeline
from strom.runtime import StreamingExecutor
from strom.runtime.distributed.repartition import Progress, RepartitionSource, RepartitionWriter

BATCH = pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", None]})


def _topic(bootstrap: str) -> str:
    topic = f"sink-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(15)
    return topic


def _consume(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of partition 0 of ``topic`` up to its end, as another client sees it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                         "enable.partition.eof": True})  # fmt: skip
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[bytes] = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, "no end of partition within 10 s"
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                return out
            assert error is None, error
            out.append(message.value())
    finally:
        consumer.close()


Readback = Callable[[], list[int]]


def _sink(kind: str, tmp_path: Path, broker: Broker) -> tuple[Sink, Readback]:
    """A sink of ``kind`` and how another reader (not the sink) sees the ids it holds."""
    if kind == "memory":
        memory = MemorySink()
        return memory, lambda: memory.to_frame().get_column("id").to_list()
    if kind in ("ndjson", "parquet"):
        out = tmp_path / "files"
        read = pl.read_ndjson if kind == "ndjson" else pl.read_parquet

        def files() -> list[int]:
            frames = [read(f, schema=BATCH.schema) for f in sorted(out.glob(f"*.{kind}"))]  # type: ignore[operator]
            return pl.concat(frames).get_column("id").to_list() if frames else []

        return FileSink(out, kind), files  # type: ignore[arg-type]
    if kind == "sqlite":
        db = tmp_path / "out.sqlite"

        def rows() -> list[int]:
            with sqlite3.connect(db) as other:
                return [r[0] for r in other.execute("SELECT id FROM results ORDER BY rowid")]

        return SQLiteSink(db, "results"), rows
    bootstrap = broker.bootstrap_servers
    topic = _topic(bootstrap)
    lingering = {"linger.ms": 1_000}  # unsent until pre_commit waits for it
    if kind == "kafka":
        sink: Sink = KafkaSink(bootstrap, topic, producer_config=lingering)
    else:
        sink = RepartitionWriter(bootstrap, topic, ["id"], 1, writer=0, run_id="r",
                                 producer_config=lingering)  # fmt: skip

    def records() -> list[int]:
        if kind == "kafka":
            return [json.loads(v)["id"] for v in _consume(bootstrap, topic)]
        reader = RepartitionSource(bootstrap, topic, [0], writers=1, run_id="r",
                                   schema=BATCH.schema, group_id="g")  # fmt: skip
        part = reader.open_partition(0)
        got: list[int] = []
        idle = 0
        for _ in range(200):  # no end of input was written: read until it stays quiet
            item = part.poll()
            if isinstance(item, pl.DataFrame) and item.height:
                got += item.get_column("id").to_list()
                idle = 0
            else:  # polls never wait: the source's wait does, until records arrive
                idle += 1 if got else 0
                if idle == 3:
                    break
                reader.wait(0.2)
        reader.close()
        return got

    return sink, records


@pytest.mark.parametrize("kind", ["memory", "ndjson", "parquet", "sqlite", "kafka", "repartition"])
def test_every_sink_keeps_the_at_least_once_contract(
    kind: str, tmp_path: Path, strom_broker: Broker
) -> None:
    """One suite over every sink: what was written is visible to another reader once
    ``pre_commit`` returns; ``commit`` adds nothing and may repeat; ``abort`` takes nothing
    back (a replay writes it again); ``close`` keeps it all."""
    sink, readback = _sink(kind, tmp_path, strom_broker)
    sink.open()
    sink.write(BATCH)
    sink.pre_commit(1)
    assert readback() == [1, 2, 3]
    sink.commit(1)
    sink.commit(1)
    assert readback() == [1, 2, 3]
    sink.write(BATCH.with_columns(pl.col("id") + 10))
    sink.abort(2)
    sink.close()
    assert readback() == [1, 2, 3, 11, 12, 13]


def test_sqlite_rows_are_visible_to_another_connection_after_pre_commit(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    sink = SQLiteSink(db, "results")
    sink.open()
    sink.write(BATCH)
    sink.pre_commit(1)
    with sqlite3.connect(db) as other:
        assert other.execute("SELECT id, name FROM results ORDER BY id").fetchall() == [
            (1, "a"), (2, "b"), (3, None),
        ]  # fmt: skip
    sink.commit(1)
    sink.write(BATCH.with_columns(pl.col("id") + 10))
    sink.abort(2)  # at-least-once: what was written stays (a replay writes it again)
    sink.close()
    with sqlite3.connect(db) as other:
        assert other.execute("SELECT count(*) FROM results").fetchone() == (6,)


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_file_sink_files_exist_whole_after_pre_commit(tmp_path: Path, fmt: str) -> None:
    sink = FileSink(tmp_path / "out", fmt)  # type: ignore[arg-type]
    sink.open()
    sink.write(BATCH)
    sink.write(BATCH.tail(1))
    sink.pre_commit(1)
    files = sorted((tmp_path / "out").iterdir())
    assert [f.suffix for f in files] == ([".ndjson"] if fmt == "ndjson" else [".parquet"] * 2)
    read = pl.read_ndjson if fmt == "ndjson" else pl.read_parquet
    got = pl.concat([read(f, schema=BATCH.schema) for f in files])  # type: ignore[operator]
    assert_frame_equal(got, pl.concat([BATCH, BATCH.tail(1)]))
    sink.commit(1)
    sink.pre_commit(2)  # nothing new written: nothing to sync
    sink.close()


def test_kafka_records_are_readable_after_pre_commit(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    topic = _topic(bootstrap)
    sink = KafkaSink(bootstrap, topic, producer_config={"linger.ms": 1_000})  # lingers: unsent
    sink.open()
    sink.write(BATCH)
    sink.pre_commit(7)  # waits for every acknowledgement
    assert [json.loads(v)["id"] for v in _consume(bootstrap, topic)] == [1, 2, 3]
    metrics = sink.metrics()
    assert (metrics.rows_in, metrics.rows_out, metrics.detail) == (3, 3, {"failed": 0})
    sink.commit(7)
    sink.close()
    sink.pre_commit(8)  # a final checkpoint after close: close waited for every record
    with pytest.raises(RuntimeError, match="before open"):
        KafkaSink(bootstrap, topic).pre_commit(1)


def test_repartition_records_are_readable_after_pre_commit(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    topic = _topic(bootstrap)
    writer = RepartitionWriter(bootstrap, topic, ["id"], 1, writer=0, run_id="r",
                               producer_config={"linger.ms": 1_000})  # fmt: skip
    writer.open()
    writer.write(BATCH)
    writer.progress(Progress(ended=True))
    writer.pre_commit(1)
    reader = RepartitionSource(bootstrap, topic, [0], writers=1, run_id="r",
                               schema=BATCH.schema, group_id="g")  # fmt: skip
    partition = reader.open_partition(0)
    item = None
    for _ in range(100):  # polls that find nothing yet return None (and never wait)
        if isinstance(item := partition.poll(), pl.DataFrame):
            break
        reader.wait(0.2)
    assert isinstance(item, pl.DataFrame)
    assert_frame_equal(item, BATCH)
    assert writer.metrics().detail == {"records": 2}
    writer.close()
    reader.close()


def test_console_sink_output_is_out_after_pre_commit(capfd: pytest.CaptureFixture[str]) -> None:
    sink = ConsoleSink()
    sink.write(BATCH)
    sink.pre_commit(1)
    assert "name" in capfd.readouterr().out


class _Counting(AtLeastOnceSink):
    """A sink that remembers the hooks called on it (the defaults do nothing else)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.rows = 0

    def write(self, batch: pl.DataFrame) -> None:
        self.rows += batch.height

    def pre_commit(self, checkpoint_id: int) -> None:
        self.calls.append(("pre_commit", checkpoint_id))


def test_the_executor_pre_commits_every_sink_and_dead_letter_output(
    strom_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    topic = _topic(bootstrap)
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in (b'{"id": 1, "name": "a"}', b"not json", b'{"id": 2, "name": "b"}'):
        producer.produce(topic, value, partition=0)
    assert producer.flush(15) == 0
    db = tmp_path / "dead.sqlite"
    source = KafkaSource(bootstrap, topic, schema=BATCH.schema, bounded=True,
                         dead_letter=SQLiteSink(db, "dead"))  # fmt: skip
    p = Pipeline()
    p.source(source).sink(results := _Counting())
    ex = StreamingExecutor(p)
    assert ex.sinks() == [results, *source.side_sinks()]
    while results.rows < 2:
        assert ex.step()
    ex.pre_commit(1)
    assert results.calls == [("pre_commit", 1)]
    with sqlite3.connect(db) as other:  # the dead letter is durable with the checkpoint
        assert other.execute("SELECT raw FROM dead").fetchall() == [(b"not json",)]
    ex.commit(1)
    ex.abort(2)
    ex.run()


def test_dead_letter_output_forwards_the_phases_once_open(tmp_path: Path) -> None:
    output = DeadLetterOutput(SQLiteSink(tmp_path / "d.sqlite", "dead"), "test")
    output.pre_commit(1)  # nothing written: the sink is not even open
    output.write(dead_letter_frame("t", 0, ["bad"], [5], [None], [b"x"]))
    output.pre_commit(2)
    with sqlite3.connect(tmp_path / "d.sqlite") as other:
        assert other.execute("SELECT reason, offset FROM dead").fetchall() == [("bad", 5)]
    output.commit(2)
    output.close()
