"""The real ``kcat`` binary (librdkafka) against strom, driven as a subprocess.

kcat has no admin commands: topics are auto-created by its producer, or created with
confluent-kafka's admin client where several partitions are needed. kcat reports no offsets
when producing, so the expected placement is computed: librdkafka's default partitioner
(``consistent_random``) puts a keyed message in ``crc32(key) % partitions``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from client_helpers import (
    CODECS,
    Got,
    Msg,
    RestartableBroker,
    Sent,
    assert_same_log,
    by_partition,
    make_messages,
    stored_batches,
)
from confluent_kafka.admin import AdminClient, NewTopic

from strom.broker import Broker

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat)")

GROUP_ARGS = [
    "-X",
    "auto.offset.reset=earliest",
    "-X",
    "session.timeout.ms=6000",
    "-X",
    "heartbeat.interval.ms=500",
]


def kcat(
    *args: str, stdin: bytes | None = None, ok: bool = True
) -> subprocess.CompletedProcess[bytes]:
    assert KCAT is not None
    done = subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=60, check=False)
    if ok:
        assert done.returncode == 0, (args, done.returncode, done.stderr.decode())
    return done


def produce(
    bootstrap: str,
    topic: str,
    msgs: Sequence[Msg],
    codec: str,
    partitions: int,
    *,
    sent: Sent | None = None,
    extra: Sequence[str] = (),
) -> Sent:
    """``kcat -P -K:`` one ``key:value`` line per message, with the messages' (shared) headers.

    Returns where each message must have landed: partition by librdkafka's ``crc32(key)``,
    offsets following on from ``sent``.
    """
    headers = {m.headers for m in msgs}
    assert len(headers) == 1, "kcat's -H applies to every message of one run"
    header_args = [a for k, v in next(iter(headers)) for a in ("-H", f"{k}={v.decode()}")]
    lines = b"".join((m.key or b"") + b":" + (m.value or b"") + b"\n" for m in msgs)
    kcat("-b", bootstrap, "-P", "-t", topic, "-K:", "-z", codec, *header_args, *extra, stdin=lines)
    sent = sent if sent is not None else Sent()
    next_offset = {p: len(gs) for p, gs in by_partition(sent.placed).items()}
    for m in msgs:
        assert m.key is not None
        p = zlib.crc32(m.key) % partitions
        sent.add(p, next_offset.get(p, 0), m)
        next_offset[p] = next_offset.get(p, 0) + 1
    return sent


def parse(stdout: bytes) -> list[Got]:
    """kcat ``-J`` output: one JSON object per record."""
    got = []
    for line in stdout.decode().splitlines():
        r = json.loads(line)
        flat = r.get("headers") or []
        headers = tuple((flat[i], flat[i + 1].encode()) for i in range(0, len(flat), 2))
        key = None if r["key"] is None else r["key"].encode()
        value = None if r["payload"] is None else r["payload"].encode()
        got.append(Got(r["partition"], r["offset"], Msg(key, value, headers)))
    return got


def kcat_messages(tag: str, count: int, start: int = 0) -> list[Msg]:
    """Printable messages (kcat reads lines) sharing one header set (kcat's -H is per run)."""
    headers = (("src", b"kcat"), ("tag", tag.encode()))
    return [
        Msg(m.key, m.value, headers) for m in make_messages(tag, count, start=start, binary=False)
    ]


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_codec(broker: RestartableBroker, topic: str, codec: str) -> None:
    """Produce to a topic that does not exist yet (auto-created with 1 partition), then read
    it back from the beginning.

    Debian's kcat links librdkafka 2.0, which sends gzip, snappy and lz4 uncompressed unless
    the broker lists Produce v0 in ApiVersions (KAFKA-18659; strom lists it, as Kafka 4 does):
    the stored codec check below catches that."""
    bootstrap = broker.bootstrap_servers
    msgs = kcat_messages(codec, 50)
    # One batch (kcat flushes at end of input): clients skip compressing tiny batches.
    sent = produce(bootstrap, topic, msgs, codec, 1, extra=("-X", "linger.ms=200"))
    metadata = json.loads(kcat("-b", bootstrap, "-L", "-J", "-t", topic).stdout)
    [described] = metadata["topics"]
    assert (described["topic"], len(described["partitions"])) == (topic, 1)
    assert "error" not in described
    got = parse(kcat("-b", bootstrap, "-C", "-t", topic, "-e", "-o", "beginning", "-J").stdout)
    assert_same_log(got, sent)
    assert [g.msg for g in got] == msgs
    assert {b.codec for b in stored_batches(broker.data_dir, topic)} == {codec}


def test_group_commit_survives_restart(broker: RestartableBroker, topic: str) -> None:
    """``kcat -G`` reads part, commits on exit; after a restart and more produce, the next
    ``kcat -G`` in the group reads exactly the rest."""
    bootstrap = broker.bootstrap_servers
    group = f"{topic}-group"
    create_topic(bootstrap, topic, 3)
    idempotent = ("-X", "enable.idempotence=true")
    sent = produce(bootstrap, topic, kcat_messages("a", 30), "snappy", 3, extra=idempotent)
    assert len(by_partition(sent.placed)) == 3

    first = parse(kcat("-b", bootstrap, "-G", group, topic, "-c", "12", "-J", *GROUP_ARGS).stdout)
    assert len(first) == 12
    expected = {(g.partition, g.offset): g for g in sent.placed}
    assert all(expected[(g.partition, g.offset)] == g for g in first)
    for p, gs in by_partition(first).items():
        assert [g.offset for g in gs] == list(range(len(gs))), f"partition {p} read out of order"

    broker.restart()

    more = kcat_messages("b", 25, start=30)
    produce(bootstrap, topic, more, "gzip", 3, sent=sent, extra=idempotent)
    second = parse(kcat("-b", bootstrap, "-G", group, topic, "-e", "-J", *GROUP_ARGS).stdout)
    seen = {(g.partition, g.offset) for g in first}
    assert_same_log(second, Sent([g for g in sent.placed if (g.partition, g.offset) not in seen]))
    batches = stored_batches(broker.data_dir, topic)
    assert len({b.producer_id for b in batches}) == 2 and min(b.producer_id for b in batches) >= 0


def test_unknown_topic_without_auto_create(tmp_path: Path) -> None:
    with Broker(tmp_path / "data", auto_create_topics=False) as b:
        bootstrap = b.bootstrap_servers
        metadata = json.loads(kcat("-b", bootstrap, "-L", "-J", "-t", "no-such-topic").stdout)
        assert metadata["topics"] == [
            {
                "topic": "no-such-topic",
                "error": "Broker: Unknown topic or partition",
                "partitions": [],
            }
        ]
        produced = kcat(
            "-b",
            bootstrap,
            "-P",
            "-t",
            "no-such-topic",
            "-X",
            "topic.metadata.propagation.max.ms=200",
            stdin=b"x\n",
            ok=False,
        )
        assert produced.returncode == 1
        assert b"Delivery failed for message: Broker: Unknown topic or partition" in produced.stderr
        consumed = kcat("-b", bootstrap, "-C", "-t", "no-such-topic", "-e", ok=False)
        assert consumed.returncode == 1
        assert b"Unknown topic or partition" in consumed.stderr
        listing = json.loads(kcat("-b", bootstrap, "-L", "-J").stdout)
        assert listing["topics"] == []
