"""Kafka transactions against ``strom broker`` with confluent-kafka, kafka-python and aiokafka.

Each check runs with every client (its own producer and its own consumer):

* commit visible and abort invisible under read_committed, both visible under
  read_uncommitted; commit, abort, commit from one producer reads on past the aborted one and
  its markers (brod #659; an abort really applied: franz-go #729);
* a zombie (a second producer with the same transactional id) is fenced, and nothing it writes
  afterwards becomes visible;
* offsets sent in a transaction are committed only if it commits;
* a transaction open longer than its timeout is aborted by the broker, its producer fenced.

Plus, once: Describe/ListTransactions through kafka-python's admin client, an interrupted and
restarted consume-transform-produce loop (no lost or duplicated output: Redpanda #9571), and
kcat reading read_committed.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from txn_clients import CLIENTS, Client, Confluent

from strom.broker import Broker

_ids = itertools.count()


def _name(stem: str) -> str:
    return f"{stem}-{next(_ids)}-{time.monotonic_ns() % 10**6}"


def _create(broker: Broker, *topics: str, partitions: int = 2) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for future in futures.values():
        future.result(15)


def _describe(broker: Broker, tid: str) -> Any:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        return admin.describe_transactions([tid])[tid]
    finally:
        admin.close()


def _wait_for(condition: object, what: str, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _group_handle(client: Client, broker: Broker, group: str) -> object:
    """What each client's send_offsets_to_transaction takes for a group."""
    if isinstance(client, Confluent):
        return client.consumer(broker.bootstrap_servers, group)
    return group


def _committed(broker: Broker, group: str, topic: str, partition: int = 0) -> int:
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "isolation.level": "read_committed",
        }
    )
    try:
        [tp] = c.committed([TopicPartition(topic, partition)], timeout=15)
        return int(tp.offset)
    finally:
        c.close()


@pytest.fixture(params=CLIENTS, ids=lambda c: c.name)
def client(request: pytest.FixtureRequest) -> Client:
    chosen: Client = request.param
    return chosen


def test_commit_visible_abort_invisible(client: Client, strom_broker: Broker) -> None:
    topic = _name("visibility")
    _create(strom_broker, topic)
    p = client.producer(strom_broker.bootstrap_servers, _name("tx"))
    try:
        p.init()
        for tag, count, end in (("c", 10, "commit"), ("a", 10, "abort"), ("d", 5, "commit")):
            p.begin()
            for i in range(count):
                p.send(topic, f"{tag}{i}".encode(), partition=i % 2)
            p.flush()  # the aborted records are in the log, not just in the client
            p.commit() if end == "commit" else p.abort()
    finally:
        p.close()
    committed = sorted([f"c{i}".encode() for i in range(10)] + [f"d{i}".encode() for i in range(5)])
    everything = sorted(committed + [f"a{i}".encode() for i in range(10)])
    assert sorted(client.read(strom_broker.bootstrap_servers, topic, "read_committed", 15)) == (
        committed
    )
    assert sorted(client.read(strom_broker.bootstrap_servers, topic, "read_uncommitted", 25)) == (
        everything
    )


def test_zombie_is_fenced(client: Client, strom_broker: Broker) -> None:
    topic, tid = _name("zombie"), _name("tx")
    _create(strom_broker, topic)
    zombie = client.producer(strom_broker.bootstrap_servers, tid)
    successor = client.producer(strom_broker.bootstrap_servers, tid)
    try:
        zombie.init()
        zombie.begin()
        zombie.send(topic, b"zombie-1", partition=0)
        zombie.flush()
        successor.init()  # aborts the zombie's open transaction and fences it
        with pytest.raises(Exception) as raised:
            zombie.send(topic, b"zombie-2", partition=1)
            zombie.flush()
            zombie.commit()
        text = repr(raised.value).lower()
        assert "fenc" in text or "epoch" in text or "fatal" in text, raised.value
        successor.begin()
        successor.send(topic, b"successor", partition=1)
        successor.commit()
    finally:
        zombie.close()
        successor.close()
    assert client.read(strom_broker.bootstrap_servers, topic, "read_committed", 1) == [b"successor"]
    uncommitted = client.read(strom_broker.bootstrap_servers, topic, "read_uncommitted", 2)
    assert b"zombie-1" in uncommitted and b"zombie-2" not in uncommitted


def test_offsets_are_committed_only_with_the_transaction(
    client: Client, strom_broker: Broker
) -> None:
    source, out, group = _name("in"), _name("out"), _name("group")
    _create(strom_broker, source, out, partitions=1)
    handle = _group_handle(client, strom_broker, group)
    p = client.producer(strom_broker.bootstrap_servers, _name("tx"))
    try:
        p.init()
        p.begin()
        p.send(out, b"first", partition=0)
        p.send_offsets({(source, 0): 5}, handle)
        p.commit()
        assert _committed(strom_broker, group, source) == 5
        p.begin()
        p.send(out, b"second", partition=0)
        p.send_offsets({(source, 0): 9}, handle)
        p.flush()
        p.abort()
        assert _committed(strom_broker, group, source) == 5
    finally:
        p.close()
        if isinstance(handle, Consumer):
            handle.close()
    assert client.read(strom_broker.bootstrap_servers, out, "read_committed", 1) == [b"first"]


def test_timed_out_transaction_is_aborted_and_its_producer_fenced(
    client: Client, strom_broker: Broker
) -> None:
    topic, tid = _name("timeout"), _name("tx")
    _create(strom_broker, topic)
    p = client.producer(strom_broker.bootstrap_servers, tid, timeout_ms=2000)
    try:
        p.init()
        p.begin()
        p.send(topic, b"late", partition=0)
        p.flush()
        before = _describe(strom_broker, tid)
        assert before.state == "Ongoing"
        _wait_for(
            lambda: _describe(strom_broker, tid).state == "CompleteAbort",
            "the broker to abort the timed-out transaction",
        )
        after = _describe(strom_broker, tid)
        assert after.producer_epoch == before.producer_epoch + 1
        with pytest.raises(Exception):  # noqa: B017 - each client has its own fencing error
            p.commit()
    finally:
        p.close()
    assert client.read(strom_broker.bootstrap_servers, topic, "read_committed", 0) == []
    assert client.read(strom_broker.bootstrap_servers, topic, "read_uncommitted", 1) == [b"late"]


def test_describe_and_list_transactions(strom_broker: Broker) -> None:
    from kafka import TopicPartition as KafkaTopicPartition
    from kafka.admin import KafkaAdminClient

    topic, tid = _name("tooling"), _name("tx")
    _create(strom_broker, topic)
    p = Confluent().producer(strom_broker.bootstrap_servers, tid, timeout_ms=30_000)
    admin = KafkaAdminClient(bootstrap_servers=strom_broker.bootstrap_servers)
    try:
        p.init()
        p.begin()
        p.send(topic, b"x", partition=1)
        p.flush()
        d = admin.describe_transactions([tid])[tid]
        assert d.state == "Ongoing" and d.transaction_timeout_ms == 30_000
        assert {(tp.topic, tp.partition) for tp in d.topic_partitions} == {(topic, 1)}
        listed = [t for ts in admin.list_transactions().values() for t in ts]
        assert (tid, d.producer_id, "Ongoing") in [
            (t.transactional_id, t.producer_id, t.state) for t in listed
        ]
        ongoing = admin.list_transactions(state_filters=["Ongoing"])
        assert tid in [t.transactional_id for ts in ongoing.values() for t in ts]
        producers = admin.describe_producers([KafkaTopicPartition(topic, 1)], broker_id=1)
        [state] = next(iter(producers.values())).active_producers
        assert state.producer_id == d.producer_id and state.current_transaction_start_offset == 0
        p.commit()
        assert admin.describe_transactions([tid])[tid].state == "CompleteCommit"
        assert tid not in [
            t.transactional_id
            for ts in admin.list_transactions(state_filters=["Ongoing"]).values()
            for t in ts
        ]
    finally:
        p.close()
        admin.close()


# -- consume-transform-produce ------------------------------------------------------------------

INPUT_COUNT = 300


def _transform_loop(
    client: Client,
    broker: Broker,
    source: str,
    out: str,
    group: str,
    tid: str,
    *,
    stop_after: int | None,
) -> None:
    """Read ``source`` in ``group``, write each value upper-cased to ``out``, one transaction
    per polled batch with the next input offsets in it. After ``stop_after`` committed batches
    the loop dies mid-transaction (its output produced and flushed, never committed nor aborted,
    its consumer gone without a commit)."""
    producer = client.producer(broker.bootstrap_servers, tid)
    producer.init()  # fences the instance before, aborting its open transaction
    member = client.member(broker.bootstrap_servers, group, source, producer)
    done = 0
    idle_until = time.monotonic() + 30
    try:
        while time.monotonic() < idle_until:
            batch = member.poll()
            if not batch:
                if _committed(broker, group, source) >= INPUT_COUNT:
                    return
                continue
            idle_until = time.monotonic() + 30
            producer.begin()
            next_offsets: dict[tuple[str, int], int] = {}
            for value, topic, partition, offset in batch:
                producer.send(out, value.upper(), partition=0)
                next_offsets[(topic, partition)] = offset + 1
            producer.send_offsets(next_offsets, member.handle)
            if stop_after is not None and done >= stop_after:
                producer.flush()
                return  # the process "dies": no commit, no abort
            producer.commit()
            done += 1
        raise AssertionError("the transform loop saw no progress for 30 s")
    finally:
        member.close()
        producer.close()


def test_interrupted_consume_transform_produce_loses_and_duplicates_nothing(
    client: Client, strom_broker: Broker
) -> None:
    source, out, group, tid = _name("ctp-in"), _name("ctp-out"), _name("ctp"), _name("ctp-tx")
    _create(strom_broker, source, out, partitions=1)
    feed = Confluent().producer(strom_broker.bootstrap_servers, _name("feed"))
    feed.init()
    feed.begin()
    for i in range(INPUT_COUNT):
        feed.send(source, f"m{i:04d}".encode(), partition=0)
    feed.commit()
    feed.close()
    # Die twice mid-transaction, then run to the end; each restart fences the one before.
    for stop_after in (3, 5, None):
        _transform_loop(client, strom_broker, source, out, group, tid, stop_after=stop_after)
    got = client.read(strom_broker.bootstrap_servers, out, "read_committed", INPUT_COUNT)
    assert got == [f"M{i:04d}".encode() for i in range(INPUT_COUNT)]
    assert _committed(strom_broker, group, source) == INPUT_COUNT


# -- kcat ---------------------------------------------------------------------------------------

KCAT = shutil.which("kcat")


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat)")
def test_kcat_reads_read_committed(strom_broker: Broker) -> None:
    assert KCAT is not None
    topic = _name("kcat")
    _create(strom_broker, topic, partitions=1)
    p = Confluent().producer(strom_broker.bootstrap_servers, _name("tx"))
    p.init()
    for tag, end in (("c", "commit"), ("a", "abort"), ("d", "commit")):
        p.begin()
        for i in range(3):
            p.send(topic, f"{tag}{i}".encode(), partition=0)
        p.flush()
        p.commit() if end == "commit" else p.abort()
    p.close()

    def kcat_read(isolation: str) -> list[str]:
        args = [KCAT, "-C", "-b", strom_broker.bootstrap_servers, "-t", topic, "-e", "-q"]
        done = subprocess.run(
            [*args, "-X", f"isolation.level={isolation}", "-f", "%s\\n"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        return done.stdout.decode().split()

    assert kcat_read("read_committed") == ["c0", "c1", "c2", "d0", "d1", "d2"]
    assert kcat_read("read_uncommitted") == ["c0", "c1", "c2", "a0", "a1", "a2", "d0", "d1", "d2"]


@pytest.fixture(autouse=True)
def _no_leftover_transactions(strom_broker: Broker) -> Iterator[None]:
    """After each test: no transaction left open, and every partition's last stable offset at
    its high watermark."""
    yield
    runtime = strom_broker._runtime
    assert runtime is not None and runtime.state is not None
    _, ongoing = runtime.state.transactions.list_transactions(
        ["Ongoing", "PrepareCommit", "PrepareAbort"]
    )
    assert ongoing == [], "a transaction was left open"
    for _, _, plog in runtime.state.logs.partitions():
        assert plog.last_stable_offset == plog.high_watermark
