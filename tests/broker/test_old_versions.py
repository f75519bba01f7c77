"""The request versions Kafka 3.9 still serves and Kafka 4 removed (KIP-896), over real sockets.

Requests are encoded with strom's spec-driven codec at each old version; message sets (format
v0/v1) are built and read with kafka-python's legacy record classes, an implementation
independent of strom's conversion code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_proc import RawClient, fetch, produce
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from strom.broker import Broker
from strom.kafka.protocol.errors import ErrorCode
from strom.kafka.protocol.records import Record, build_batch, decode_records

Address = tuple[str, int]

# The versions strom serves. Kafka 3.9's lowest version of every one of these APIs is 0 (its
# JSON specs' validVersions); the highest are Kafka 3.9's except Produce (3.9: 11), Fetch (17),
# ListOffsets (9), OffsetFetch (9), FindCoordinator (6) and InitProducerId (5).
SERVED = {
    0: (0, 9),
    1: (0, 12),
    2: (0, 7),
    3: (0, 12),
    8: (0, 9),
    9: (0, 8),
    10: (0, 4),
    11: (0, 9),
    12: (0, 4),
    13: (0, 5),
    14: (0, 5),
    15: (0, 5),
    16: (0, 5),
    18: (0, 4),
    19: (0, 7),
    20: (0, 6),
    22: (0, 4),
    32: (0, 4),
    37: (0, 3),
    42: (0, 2),
}


@pytest.fixture
def client(strom_broker: Broker) -> Iterator[RawClient]:
    with RawClient((strom_broker.host, strom_broker.port)) as c:
        yield c


def message_set(
    magic: int, values: list[bytes], codec: int = 0, ts: int = 1_600_000_000_000
) -> bytes:
    builder = LegacyRecordBatchBuilder(magic, codec, batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=ts + i, key=b"k%d" % i, value=value)
    return bytes(builder.build())


def read_message_set(buf: bytes) -> list[tuple[int, int, int | None, bytes | None]]:
    """(magic, offset, timestamp, value) of each message, as a pre-0.11 client reads them."""
    out = []
    records = MemoryRecords(buf)
    while (batch := records.next_batch()) is not None:
        assert batch.validate_crc()
        out += [(batch.magic, r.offset, r.timestamp, r.value) for r in batch]
    return out


def produce_old(client: RawClient, version: int, topic: str, records: bytes) -> dict[str, Any]:
    body = client.request(
        "Produce",
        version,
        {
            "acks": -1,
            "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": records}]}],
        },
        api_key=0,
    )
    [answer] = body["responses"][0]["partition_responses"]
    return dict(answer)


def fetch_old(
    client: RawClient, version: int, topic: str, offset: int, **extra: int
) -> dict[str, Any]:
    body = client.request(
        "Fetch",
        version,
        {
            "replica_id": -1,
            "max_wait_ms": 0,
            "min_bytes": 1,
            "max_bytes": extra.get("max_bytes", 1 << 20),
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {
                            "partition": 0,
                            "fetch_offset": offset,
                            "partition_max_bytes": extra.get("partition_max_bytes", 1 << 20),
                        }
                    ],
                }
            ],
        },
        api_key=1,
    )
    [answer] = body["responses"][0]["partitions"]
    answer = dict(answer)
    answer["records"] = bytes(answer["records"]) if answer["records"] is not None else None
    return answer


def create_topic(client: RawClient, topic: str, configs: dict[str, str] | None = None) -> None:
    body = client.request(
        "CreateTopics",
        0,
        {
            "topics": [
                {
                    "name": topic,
                    "num_partitions": 1,
                    "replication_factor": 1,
                    "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
                }
            ],
            "timeout_ms": 5000,
        },
        api_key=19,
    )
    assert [(t["name"], t["error_code"]) for t in body["topics"]] == [(topic, 0)], body


# -- ApiVersions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_api_versions_advertise_kafka_3_9_lowest_versions(client: RawClient, version: int) -> None:
    body = client.request("ApiVersions", version, {}, api_key=18)
    assert body["error_code"] == 0
    served = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
    assert served == SERVED


# -- Produce v0-2: message format v0/v1 up-converted ---------------------------------------------


@pytest.mark.parametrize(("version", "magic"), [(0, 0), (1, 0), (2, 1), (2, 0), (1, 1)])
@pytest.mark.parametrize("codec", [0, 1, 2, 3])
def test_produce_old_versions_store_message_sets(
    client: RawClient, version: int, magic: int, codec: int
) -> None:
    if magic == 0 and codec == 3:
        pytest.importorskip("xxhash", reason="kafka-python's magic 0 LZ4 codec needs xxhash")
    topic = f"produce-v{version}-m{magic}-c{codec}"
    first = produce_old(client, version, topic, message_set(magic, [b"a", b"b"], codec))
    assert first["error_code"] == 0 and first["base_offset"] == 0, first
    second = produce_old(client, version, topic, message_set(magic, [b"c"], codec))
    assert second["base_offset"] == 2
    if version == 2:
        assert second["log_append_time_ms"] == -1  # CreateTime topics
    # A current consumer reads them as v2 records: values in order, magic 1 timestamps kept.
    got = fetch(client, topic, 0, 0)
    records = decode_records(got["records"])
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (2, b"c")]
    ts = [r.timestamp for r in records]
    if magic == 1:
        assert ts == [1_600_000_000_000, 1_600_000_000_001, 1_600_000_000_000]
    else:
        assert ts == [-1, -1, -1]  # magic 0 has no timestamps


def test_produce_v0_accepts_a_v2_batch_and_refuses_a_corrupt_message_set(
    client: RawClient,
) -> None:
    # Kafka never checked the magic against Produce v0-2; clients relied on it.
    assert produce_old(client, 0, "mixed", build_batch([Record(value=b"v2")]))["error_code"] == 0
    broken = bytearray(message_set(1, [b"x"]))
    broken[-1] ^= 0xFF
    answer = produce_old(client, 1, "mixed", bytes(broken))
    assert answer["error_code"] == ErrorCode.CORRUPT_MESSAGE, answer
    assert [r.value for r in decode_records(fetch(client, "mixed", 0, 0)["records"])] == [b"v2"]


# -- Fetch v0-3: v2 batches down-converted -------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3])
@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4"])
def test_fetch_old_versions_read_message_sets(
    client: RawClient, version: int, compression: str
) -> None:
    magic = 0 if version < 2 else 1
    if magic == 0 and compression == "lz4":
        pytest.importorskip("xxhash", reason="kafka-python's magic 0 LZ4 codec needs xxhash")
    topic = f"fetch-v{version}-{compression}"
    records = [Record(timestamp=1_700_000_000_000 + i, value=b"r%d" % i) for i in range(3)]
    records[1].headers = [("h", b"dropped")]
    assert (
        produce(client, topic, 0, build_batch(records, compression=compression))["error_code"] == 0
    )
    answer = fetch_old(client, version, topic, 0)
    assert answer["error_code"] == 0 and answer["high_watermark"] == 3
    ts = [1_700_000_000_000 + i if magic == 1 else None for i in range(3)]
    assert read_message_set(answer["records"]) == [(magic, i, ts[i], b"r%d" % i) for i in range(3)]
    # From the middle of a batch: an uncompressed one starts at the fetch offset; a compressed
    # one is sent whole (the client skips what precedes its offset, as with Kafka).
    later = read_message_set(fetch_old(client, version, topic, 1)["records"])
    assert [o for _, o, _, _ in later] == ([1, 2] if compression == "none" else [0, 1, 2])


def test_fetch_v1_refuses_zstd_with_its_error_code(client: RawClient) -> None:
    produce(client, "zstd", 0, build_batch([Record(value=b"z")], compression="zstd"))
    answer = fetch_old(client, 1, "zstd", 0)
    assert answer["error_code"] == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    assert answer["records"] == b""
    assert fetch_old(client, 1, "zstd", 1)["error_code"] == 0  # nothing to convert there


def test_fetch_v0_errors_and_limits(client: RawClient) -> None:
    unknown = fetch_old(client, 0, "nope", 0)
    assert unknown["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert unknown["records"] == b""  # not null: Sarama fails on a null records field
    for i in range(3):
        produce(client, "limits", 0, build_batch([Record(value=b"x" * 100, timestamp=i)]))
    assert fetch_old(client, 0, "limits", 9)["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE
    # One batch fits in 200 bytes, not two: the answer stops after the first whole message.
    small = fetch_old(client, 2, "limits", 0, partition_max_bytes=200)
    assert [o for _, o, _, _ in read_message_set(small["records"])] == [0]


def test_old_producer_to_old_consumer_round_trip(client: RawClient) -> None:
    """Sarama at its default version (0.8.2) produces v0 and fetches v0."""
    produce_old(client, 0, "roundtrip", message_set(0, [b"one", b"two"], codec=1))
    got = read_message_set(fetch_old(client, 0, "roundtrip", 0)["records"])
    assert got == [(0, 0, None, b"one"), (0, 1, None, b"two")]


# -- ListOffsets v0 -------------------------------------------------------------------------------


def list_offsets_v0(client: RawClient, topic: str, timestamp: int, max_num: int) -> dict[str, Any]:
    body = client.request(
        "ListOffsets",
        0,
        {
            "replica_id": -1,
            "topics": [
                {
                    "name": topic,
                    "partitions": [
                        {"partition_index": 0, "timestamp": timestamp, "max_num_offsets": max_num}
                    ],
                }
            ],
        },
        api_key=2,
    )
    return dict(body["topics"][0]["partitions"][0])


def test_list_offsets_v0_answers_segment_boundaries(
    strom_broker: Broker, client: RawClient
) -> None:
    create_topic(client, "segments", {"segment.bytes": "150"})
    for i in range(4):  # one ~90-byte batch per segment: bases 0, 1, 2, 3
        produce(client, "segments", 0, build_batch([Record(value=b"v" * 20, timestamp=i)]))
    directory = Path(strom_broker.config.data_dir) / "logs" / "segments-0"
    bases = sorted(int(p.name[:20]) for p in directory.glob("*.log"))
    assert bases == [0, 1, 2, 3]
    for base in bases:  # segment i last modified at second 1000 + i
        os.utime(directory / f"{base:020d}.log", (1000 + base, 1000 + base))

    def offsets(ts: int, n: int) -> list[int]:
        answer = list_offsets_v0(client, "segments", ts, n)
        assert answer["error_code"] == 0, answer
        return list(answer["old_style_offsets"])

    assert offsets(-1, 1) == [4]  # the log end offset
    assert offsets(-2, 1) == [0]  # the log start offset
    assert offsets(-1, 10) == [4, 3, 2, 1, 0]
    assert offsets(-2, 10) == [0]
    assert offsets(1_001_500, 10) == [1, 0]  # segments modified at or before 1001.5 s
    assert offsets(1_002_000, 2) == [2, 1]
    assert offsets(999_000, 10) == []
    assert offsets(-1, 0) == []
    bad = list_offsets_v0(client, "segments", -3, 1)
    assert bad["error_code"] == ErrorCode.UNSUPPORTED_VERSION
    unknown = list_offsets_v0(client, "no-such-topic", -1, 1)
    assert unknown["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_list_offsets_v0_of_an_empty_partition(client: RawClient) -> None:
    create_topic(client, "empty")
    assert list_offsets_v0(client, "empty", -1, 5)["old_style_offsets"] == [0]
    assert list_offsets_v0(client, "empty", -2, 5)["old_style_offsets"] == [0]


# -- OffsetCommit v0-1, OffsetFetch v0 ------------------------------------------------------------


def commit(client: RawClient, version: int, group: str, offset: int, **member: Any) -> int:
    body = client.request(
        "OffsetCommit",
        version,
        {
            "group_id": group,
            **member,
            "topics": [
                {
                    "name": "offsets",
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": offset,
                            "commit_timestamp": -1,
                            "committed_metadata": f"v{version}",
                        }
                    ],
                }
            ],
        },
        api_key=8,
    )
    return int(body["topics"][0]["partitions"][0]["error_code"])


def committed(client: RawClient, version: int, group: str) -> tuple[int, str | None]:
    body = client.request(
        "OffsetFetch",
        version,
        {"group_id": group, "topics": [{"name": "offsets", "partition_indexes": [0]}]},
        api_key=9,
    )
    [p] = body["topics"][0]["partitions"]
    assert p["error_code"] == 0
    return p["committed_offset"], p["metadata"]


def join(client: RawClient, version: int, group: str, member_id: str = "") -> dict[str, Any]:
    return client.request(
        "JoinGroup",
        version,
        {
            "group_id": group,
            "session_timeout_ms": 10_000,
            "rebalance_timeout_ms": 10_000,
            "member_id": member_id,
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b"\x00\x00\x00\x00\x00\x00\x00\x00"}],
        },
        api_key=11,
    )


def test_offset_commit_v0_is_a_standalone_commit(client: RawClient) -> None:
    create_topic(client, "offsets")
    assert committed(client, 0, "simple") == (-1, "")
    assert commit(client, 0, "simple", 42) == 0
    assert committed(client, 0, "simple") == (42, "v0")
    assert committed(client, 1, "simple") == (42, "v0")  # one store for every version


def test_offset_commit_v1_checks_generation_and_member(client: RawClient) -> None:
    """Sarama 1.22 commits with v1 (generation, member id, per-partition timestamp)."""
    create_topic(client, "offsets")
    joined = join(client, 1, "members")
    assert joined["error_code"] == 0, joined
    member, generation = joined["member_id"], joined["generation_id"]
    sync = client.request(
        "SyncGroup",
        0,
        {
            "group_id": "members",
            "generation_id": generation,
            "member_id": member,
            "assignments": [{"member_id": member, "assignment": b""}],
        },
        api_key=14,
    )
    assert sync["error_code"] == 0
    ok = {"generation_id_or_member_epoch": generation, "member_id": member}
    assert commit(client, 1, "members", 7, **ok) == 0
    assert committed(client, 1, "members") == (7, "v1")
    stale = {"generation_id_or_member_epoch": generation + 1, "member_id": member}
    assert commit(client, 1, "members", 8, **stale) == ErrorCode.ILLEGAL_GENERATION
    stranger = {"generation_id_or_member_epoch": generation, "member_id": "who"}
    assert commit(client, 1, "members", 8, **stranger) == ErrorCode.UNKNOWN_MEMBER_ID
    # v0 knows no members: into a group with members it is refused like any standalone commit.
    assert commit(client, 0, "members", 9) == ErrorCode.UNKNOWN_MEMBER_ID
    assert committed(client, 0, "members") == (7, "v1")


# -- admin APIs: CreateTopics v0-1, DeleteTopics v0, DescribeConfigs v0 --------------------------


def test_admin_old_versions(client: RawClient) -> None:
    create_topic(client, "admin-v0", {"retention.ms": "60000"})
    dry = client.request(
        "CreateTopics",
        1,
        {
            "topics": [{"name": "admin-v1", "num_partitions": 2, "replication_factor": 1}],
            "timeout_ms": 5000,
            "validate_only": True,
        },
        api_key=19,
    )
    assert [(t["name"], t["error_code"]) for t in dry["topics"]] == [("admin-v1", 0)]
    again = client.request(
        "CreateTopics",
        0,
        {"topics": [{"name": "admin-v0", "num_partitions": 1, "replication_factor": 1}]},
        api_key=19,
    )
    assert again["topics"][0]["error_code"] == ErrorCode.TOPIC_ALREADY_EXISTS
    described = client.request(
        "DescribeConfigs",
        0,
        {
            "resources": [
                {"resource_type": 2, "resource_name": "admin-v0", "configuration_keys": None}
            ]
        },
        api_key=32,
    )
    [resource] = described["results"]
    entries = {c["name"]: c for c in resource["configs"]}
    assert entries["retention.ms"]["value"] == "60000"
    assert entries["retention.ms"]["is_default"] is False  # v0 says "default" without a source
    assert entries["segment.bytes"]["is_default"] is True
    deleted = client.request(
        "DeleteTopics", 0, {"topic_names": ["admin-v0", "admin-v1"], "timeout_ms": 5000}, api_key=20
    )
    codes = {r["name"]: r["error_code"] for r in deleted["responses"]}
    assert codes == {"admin-v0": 0, "admin-v1": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}


# -- the newest group versions Kafka 3.9 serves: JoinGroup v8-9, ListGroups v5, OffsetCommit v9 --


def test_join_group_v9_list_groups_v5_offset_commit_v9(client: RawClient) -> None:
    create_topic(client, "offsets")
    first = join(client, 9, "newest")
    assert first["error_code"] == ErrorCode.MEMBER_ID_REQUIRED  # v4+: join twice
    joined = join(client, 9, "newest", first["member_id"])
    assert joined["error_code"] == 0 and joined["skip_assignment"] is False
    assert joined["protocol_type"] == "consumer" and joined["protocol_name"] == "range"
    member, generation = joined["member_id"], joined["generation_id"]
    sync = client.request(
        "SyncGroup",
        5,
        {
            "group_id": "newest",
            "generation_id": generation,
            "member_id": member,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignments": [{"member_id": member, "assignment": b""}],
        },
        api_key=14,
    )
    assert sync["error_code"] == 0
    ok = {"generation_id_or_member_epoch": generation, "member_id": member}
    assert commit(client, 9, "newest", 11, **ok) == 0
    assert committed(client, 1, "newest") == (11, "v9")

    def listed(types: list[str]) -> list[tuple[str, str]]:
        body = client.request("ListGroups", 5, {"types_filter": types}, api_key=16)
        return [(g["group_id"], g["group_type"]) for g in body["groups"]]

    assert listed([]) == [("newest", "classic")]
    assert listed(["Classic"]) == [("newest", "classic")]
    assert listed(["consumer"]) == []  # KIP-848 groups: strom has none
