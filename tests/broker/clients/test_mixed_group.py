"""One consumer group, two different clients: kafka-python and librdkafka share the partitions
(both speak the classic ``consumer`` protocol with the ``range`` assignor) and, between them,
read every record exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from client_helpers import (
    Got,
    Msg,
    RestartableBroker,
    Sent,
    assert_same_log,
    by_partition,
    wait_until,
)
from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

PARTITIONS = 6


class Member(threading.Thread):
    """Polls one consumer until stopped, keeping what it read and its latest assignment."""

    def __init__(self, poll: Callable[[], list[Got]], assignment: Callable[[], set[int]]) -> None:
        super().__init__(daemon=True)
        self.poll, self.assignment = poll, assignment
        self.got: list[Got] = []
        self.assigned: set[int] = set()
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.got.extend(self.poll())
                self.assigned = self.assignment()
        except BaseException as exc:
            self.error = exc


def test_kafka_python_and_librdkafka_share_a_group(broker: RestartableBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    group = f"{topic}-group"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    admin.close()

    kp = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    ck = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": "range",
        }
    )
    ck.subscribe([topic])

    def poll_kp() -> list[Got]:
        # A poll that ends before a rebalance completes makes kafka-python 3.0.12 discard the
        # finished join and send another JoinGroup (a new rebalance), so wait long enough.
        return [
            Got(r.partition, r.offset, Msg(r.key, r.value))
            for records in kp.poll(timeout_ms=2000).values()
            for r in records
        ]

    def poll_ck() -> list[Got]:
        got = []
        for r in ck.consume(num_messages=100, timeout=0.05):
            assert r.error() is None, r.error()
            got.append(Got(r.partition(), r.offset(), Msg(r.key(), r.value())))
        return got

    # Each client polls in its own thread, as separate processes would: a member blocked in
    # the other's poll would hold up every rebalance.
    members = [
        Member(poll_kp, lambda: {tp.partition for tp in kp.assignment()}),
        Member(poll_ck, lambda: {tp.partition for tp in ck.assignment()}),
    ]
    for m in members:
        m.start()
    try:
        # Both members joined and the partitions are split between them, with nothing
        # produced yet (so no record can be read twice across a rebalance).
        def split() -> tuple[set[int], set[int]] | None:
            mine, theirs = members[0].assigned, members[1].assigned
            if mine and theirs and not mine & theirs and mine | theirs == set(range(PARTITIONS)):
                return mine, theirs
            return None

        mine, theirs = wait_until(split, 30, "the group to split the partitions")
        assert (len(mine), len(theirs)) == (3, 3), "range assignor: 3 partitions each"

        producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
        sent = Sent()
        for i in range(120):
            msg = Msg(f"key-{i % 17}".encode(), f"v-{i}".encode())

            def report(err: Any, r: Any, msg: Msg = msg) -> None:
                assert err is None, err
                sent.add(r.partition(), r.offset(), msg)

            producer.produce(topic, key=msg.key, value=msg.value, on_delivery=report)
        assert producer.flush(30) == 0

        wait_until(lambda: sum(len(m.got) for m in members) >= len(sent.placed), 30, "all records")
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(10)
    for m in members:
        assert m.error is None, m.error
    got_kp, got_ck = members[0].got, members[1].got
    assert (members[0].assigned, members[1].assigned) == (mine, theirs), "no rebalance"
    assert set(by_partition(got_kp)) <= mine and set(by_partition(got_ck)) <= theirs
    assert_same_log(got_kp + got_ck, sent)
    try:
        kp.commit()
        ck.commit(asynchronous=False)
    finally:
        kp.close(autocommit=False)
        ck.close()
