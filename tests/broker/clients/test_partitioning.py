"""Many partitions: every client sees 12 partitions and puts each key where Kafka's Java
default partitioner (murmur2) would, so keyed data from different clients lines up."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest
from aiokafka import AIOKafkaProducer
from client_helpers import Got, Msg, RestartableBroker, by_partition, java_partition, murmur2
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

PARTITIONS = 12
KEYS = [f"user-{i}".encode() for i in range(40)]
KCAT = shutil.which("kcat")


def test_murmur2_matches_java() -> None:
    # Vectors from Kafka's UtilsTest.testMurmur2.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107


def messages(client: str) -> list[Msg]:
    return [Msg(KEYS[i % len(KEYS)], f"{client}-{i}".encode()) for i in range(len(KEYS) * 2)]


def produce_kafka_python(bootstrap: str, topic: str) -> list[Msg]:
    msgs = messages("kafka-python")
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for m in msgs:
        producer.send(topic, key=m.key, value=m.value)
    producer.flush()
    producer.close()
    return msgs


def produce_aiokafka(bootstrap: str, topic: str) -> list[Msg]:
    msgs = messages("aiokafka")

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for m in msgs:
                await producer.send(topic, key=m.key, value=m.value)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
    return msgs


def produce_confluent(bootstrap: str, topic: str) -> list[Msg]:
    msgs = messages("confluent")
    # librdkafka's own default is crc32-based; murmur2_random is its Java-compatible option.
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for m in msgs:
        producer.produce(topic, key=m.key, value=m.value)
    assert producer.flush(30) == 0
    return msgs


def produce_kcat(bootstrap: str, topic: str) -> list[Msg]:
    assert KCAT is not None
    msgs = messages("kcat")
    lines = b"".join(m.key + b":" + m.value + b"\n" for m in msgs if m.key and m.value)
    args = [KCAT, "-b", bootstrap, "-P", "-t", topic, "-K:", "-X", "partitioner=murmur2_random"]
    done = subprocess.run(args, input=lines, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return msgs


PRODUCERS = {
    "kafka-python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
    "confluent": produce_confluent,
    "kcat": produce_kcat,
}


def read_all(bootstrap: str, topic: str, count: int) -> list[Got]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    got: list[Got] = []
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        for _ in range(300):
            for r in c.consume(num_messages=count, timeout=0.2):
                assert r.error() is None, r.error()
                got.append(Got(r.partition(), r.offset(), Msg(r.key(), r.value())))
            if len(got) >= count:
                break
    finally:
        c.close()
    assert len(got) == count
    return got


def test_keys_land_consistently_across_clients(broker: RestartableBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    admin.close()

    # Every client's metadata shows the 12 partitions.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    assert consumer.partitions_for_topic(topic) == set(range(PARTITIONS))
    consumer.close()
    md = Producer({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    assert sorted(md.topics[topic].partitions) == list(range(PARTITIONS))
    if KCAT is not None:
        listing = subprocess.run(
            [KCAT, "-b", bootstrap, "-L", "-J", "-t", topic], capture_output=True, timeout=60
        )
        [described] = json.loads(listing.stdout)["topics"]
        assert len(described["partitions"]) == PARTITIONS

    sent: dict[str, list[Msg]] = {}
    for name, produce in PRODUCERS.items():
        if name == "kcat" and KCAT is None:
            continue
        sent[name] = produce(bootstrap, topic)
    got = read_all(bootstrap, topic, sum(len(ms) for ms in sent.values()))

    for g in got:
        assert g.msg.key is not None
        assert g.partition == java_partition(g.msg.key, PARTITIONS), g
    assert len(by_partition(got)) == PARTITIONS
    # Per partition, each client's messages are in the order it sent them.
    for name, msgs in sent.items():
        for p, records in by_partition(got).items():
            mine = [
                r.msg
                for r in records
                if r.msg.value and r.msg.value.startswith(name.encode() + b"-")
            ]
            assert mine == [m for m in msgs if java_partition(m.key or b"", PARTITIONS) == p]


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_explicit_partition(broker: RestartableBroker, topic: str, client: str) -> None:
    """A partition chosen by the producer is honoured, including the last one."""
    bootstrap = broker.bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    admin.close()
    if client == "kafka-python":
        kp = KafkaProducer(bootstrap_servers=bootstrap)
        for p in range(PARTITIONS):
            kp.send(topic, key=b"same", value=b"to-%d" % p, partition=p)
        kp.flush()
        kp.close()
    else:
        cp = Producer({"bootstrap.servers": bootstrap})
        for p in range(PARTITIONS):
            cp.produce(topic, key=b"same", value=b"to-%d" % p, partition=p)
        assert cp.flush(30) == 0
    got = read_all(bootstrap, topic, PARTITIONS)
    assert sorted((g.partition, g.offset, g.msg.value) for g in got) == [
        (p, 0, b"to-%d" % p) for p in range(PARTITIONS)
    ]
