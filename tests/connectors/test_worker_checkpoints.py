"""Workers with exactly-once checkpoints, stepped in one process against a real broker.

Each worker checkpoints itself; a "crash" here abandons a worker object mid-run (its
transaction left open, its producer never closed) and builds a new one from its checkpoint
directory, which fences the old transactional id and resumes. The plan has two keyed steps on
different keys (two repartition topics), so a restarted worker must bring back its writers'
event-time progress (a reader that had ended must say so again, a quiet partition must not fall
back to the minimum), or the second step's windows never fire.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from connector_helpers import Sent, create_topic, produce

from strom import (
    Broker,
    KafkaSink,
    KafkaSource,
    MemorySink,
    Pipeline,
    SQLiteSink,
    Tumbling,
    agg,
    run_bounded,
)
from strom.engine.contracts import Sink
from strom.pipeline import Plan
from strom.runtime.checkpoints.layout import worker_store
from strom.runtime.distributed.plan_split import WorkerConfig, create_repartition_topics
from strom.runtime.distributed.repartition import RepartitionSource
from strom.runtime.distributed.workers import Worker, WorkerCheckpoints

INPUT = [{"k": f"k{i % 7}", "ts": i * 10} for i in range(3_000)]


def _plan(bootstrap: str, out: str | Sink) -> Plan:
    """Windows per key, then windows per count; to the exactly-once topic ``out`` (or a sink)."""
    p = Pipeline()
    source = KafkaSource(bootstrap, "in", schema={"k": pl.String, "ts": pl.Int64},
                         bounded=True, max_batch_records=50)  # fmt: skip
    per_key = p.source(source, timestamp="ts").key_by("k").window(Tumbling(1_000))
    counts = per_key.agg(agg.count())
    # the second keyed step re-keys by the count: a second repartition topic
    by_count = counts.key_by("count").window(Tumbling(5_000)).agg(agg.count().alias("n"))
    if isinstance(out, str):
        out = KafkaSink(bootstrap, out, guarantee="exactly-once", transactional_id=out)
    by_count.sink(out)
    return p.plan()


def _read(bootstrap: str, topic: str) -> list[tuple[int, int, int]]:
    config = {"bootstrap.servers": bootstrap, "group.id": "reader",
              "enable.partition.eof": True, "isolation.level": "read_committed"}  # fmt: skip
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])
    rows, ended = [], set()
    try:
        while len(ended) < 2:
            for m in consumer.consume(500, timeout=1):
                error = m.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    ended.add(m.partition())
                    continue
                row = json.loads(m.value() or b"")
                rows.append((row["window_start"], row["count"], row["n"]))
    finally:
        consumer.close()
    return sorted(rows)


def _cut_one_ended(worker: Worker) -> list[bool]:
    """Whether each of the worker's partitions of the first repartition topic has ended."""
    for node in worker.plan.sources():
        if node.name == "repartition-1" and isinstance(node.source, RepartitionSource):
            return [r.position()["ended"] for _, r in sorted(node.source._readers.items())]
    return []


def _run(bootstrap: str, chk: Path, app: str, out: str, *, crash: bool) -> int:
    """Both workers to the end; with ``crash``, worker 0 is abandoned and rebuilt from its
    checkpoints once some but not all of its first-topic partitions have ended. The rounds."""
    configs = [WorkerConfig(i, 2, app, f"{app}-run", bootstrap, partitions=4) for i in range(2)]
    create_repartition_topics(_plan(bootstrap, out), configs[0])

    def worker(i: int) -> Worker:
        checkpoints = WorkerCheckpoints(worker_store(chk, i), interval_ms=50)
        made = Worker(_plan(bootstrap, out), configs[i], checkpoints=checkpoints)
        made.start()
        return made

    workers, live, crashed = [worker(0), worker(1)], [True, True], False
    for rounds in range(1, 2_000):
        for i, w in enumerate(workers):
            if live[i]:
                live[i] = w.step()
        ended = _cut_one_ended(workers[0]) if live[0] else []
        if crash and not crashed and any(ended) and not all(ended):
            assert workers[0].checkpoints is not None
            workers[0].checkpoints.checkpoint()  # its last checkpoint: with a partition ended
            workers[0].checkpoints._writer.shutdown(wait=True)  # abandoned, not closed
            workers[0].checkpoints.store.unlock()
            workers[0], crashed = worker(0), True
        if not any(live):
            assert crashed == crash
            return rounds
    raise AssertionError(f"the workers did not finish ({live}): stuck")


@pytest.mark.parametrize("crash", [False, True])
def test_a_rebuilt_worker_of_a_two_step_plan_finishes_with_the_same_output(
    strom_broker: Broker, tmp_path: Path, crash: bool
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "in", 4)
    produce(bootstrap, "in", [Sent(i % 4, json.dumps(r).encode()) for i, r in enumerate(INPUT)])
    create_topic(bootstrap, "out", 2)
    _run(bootstrap, tmp_path / "chk", "app", "out", crash=crash)
    got = _read(bootstrap, "out")
    reference = MemorySink()
    run_bounded(_plan(bootstrap, reference))  # the bounded runner over the same topic
    expected = reference.to_frame().select("window_start", "count", "n")
    assert len(got) > 10 and got == sorted(expected.iter_rows())


def test_exactly_once_dead_letters_of_two_workers_stay_apart(
    strom_broker: Broker, tmp_path: Path
) -> None:
    """Each worker's dead-letter sink stages as its own writer (it is told its worker, through
    the dead-letter output): no worker fences the other's, and every undecodable record is
    published once."""
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "in", 4)
    create_topic(bootstrap, "out", 2)
    sent = [Sent(i % 4, json.dumps(r).encode()) for i, r in enumerate(INPUT[:400])]
    sent += [Sent(i % 4, b"not json %d" % i) for i in range(8)]
    produce(bootstrap, "in", sent)
    db = tmp_path / "letters.db"

    def plan() -> Plan:
        p = Pipeline()
        letters = SQLiteSink(db, "dead", guarantee="exactly-once", sink_id="dead")
        source = KafkaSource(bootstrap, "in", schema={"k": pl.String, "ts": pl.Int64},
                             bounded=True, dead_letter=letters, max_batch_records=50)  # fmt: skip
        windows = p.source(source, timestamp="ts").key_by("k").window(Tumbling(1_000))
        windows.agg(agg.count()).sink(
            KafkaSink(bootstrap, "out", guarantee="exactly-once", transactional_id="out")
        )
        return p.plan()

    configs = [WorkerConfig(i, 2, "letters", "run", bootstrap, partitions=4) for i in range(2)]
    create_repartition_topics(plan(), configs[0])
    workers = [
        Worker(plan(), c, checkpoints=WorkerCheckpoints(worker_store(tmp_path / "chk", i), 20))
        for i, c in enumerate(configs)
    ]
    live = [True, True]
    while any(live):
        for i, w in enumerate(workers):
            if live[i]:
                live[i] = w.step()
    with sqlite3.connect(db) as conn:
        raws = sorted(r[0] for r in conn.execute("SELECT raw FROM dead"))
    assert raws == sorted(b"not json %d" % i for i in range(8))
