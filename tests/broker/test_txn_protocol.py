"""The transactional APIs on the wire, every served version, with strom's own codec.

What clients cannot easily be made to send: each version's fencing error code (PRODUCER_FENCED
from the version that knows it, INVALID_PRODUCER_EPOCH before), KIP-890 produce verification,
a control batch from a client, OffsetFetch ``require_stable`` against staged offsets, the
KIP-447 generation check of TxnOffsetCommit, and FindCoordinator's key types.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from broker_proc import RawClient

from strom.broker import Broker
from strom.broker.coordinator import errors
from strom.kafka.protocol.codec import versions_of
from strom.kafka.protocol.errors import ErrorCode
from strom.kafka.protocol.records import Record, build_batch, build_control_batch

_ids = itertools.count()


@pytest.fixture
def raw(strom_broker: Broker) -> Iterator[RawClient]:
    with RawClient((strom_broker.host, strom_broker.port)) as client:
        yield client


def _init(raw: RawClient, tid: str, version: int = 4, **extra: Any) -> dict[str, Any]:
    body = {"transactional_id": tid, "transaction_timeout_ms": 30_000, **extra}
    return raw.request("InitProducerId", version, body, api_key=22)


def _add_partitions(
    raw: RawClient, version: int, tid: str, pid: int, epoch: int, topic: str, *parts: int
) -> dict[int, int]:
    body = raw.request(
        "AddPartitionsToTxn",
        version,
        {
            "v3_and_below_transactional_id": tid,
            "v3_and_below_producer_id": pid,
            "v3_and_below_producer_epoch": epoch,
            "v3_and_below_topics": [{"name": topic, "partitions": list(parts)}],
        },
        api_key=24,
    )
    [topic_result] = body["results_by_topic_v3_and_below"]
    return {
        r["partition_index"]: r["partition_error_code"]
        for r in topic_result["results_by_partition"]
    }


def _end(raw: RawClient, version: int, tid: str, pid: int, epoch: int, commit: bool) -> int:
    body = {
        "transactional_id": tid,
        "producer_id": pid,
        "producer_epoch": epoch,
        "committed": commit,
    }
    return int(raw.request("EndTxn", version, body, api_key=26)["error_code"])


def _produce(raw: RawClient, topic: str, partition: int, records: bytes) -> int:
    body = raw.request(
        "Produce",
        9,
        {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 10_000,
            "topic_data": [
                {"name": topic, "partition_data": [{"index": partition, "records": records}]}
            ],
        },
        api_key=0,
    )
    return int(body["responses"][0]["partition_responses"][0]["error_code"])


def _topic(raw: RawClient, partitions: int = 2) -> str:
    name = f"proto-{next(_ids)}"
    body = raw.request(
        "CreateTopics",
        5,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "assignments": [],
                    "configs": [],
                }
            ],
            "timeout_ms": 10_000,
            "validate_only": False,
        },
        api_key=19,
    )
    assert body["topics"][0]["error_code"] == 0, body
    return name


def test_served_versions_match_kafka_3_9_client_versions(raw: RawClient) -> None:
    body = raw.request(
        "ApiVersions", 3, {"client_software_name": "t", "client_software_version": "1"}, api_key=18
    )
    served = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
    assert served[22] == (0, 5)  # InitProducerId
    assert served[24] == (0, 3)  # AddPartitionsToTxn: v4+ is broker-to-broker
    assert served[25] == (0, 4)  # AddOffsetsToTxn
    assert served[28] == (0, 4)  # TxnOffsetCommit
    assert served[26] == (0, 4)  # EndTxn
    assert served[65] == (0, 0)  # DescribeTransactions
    assert served[66] == (0, 1)  # ListTransactions
    assert served[61] == (0, 0)  # DescribeProducers
    for key, name in ((22, "InitProducerId"), (26, "EndTxn"), (66, "ListTransactions")):
        assert served[key][1] in versions_of(f"{name}Request")


@pytest.mark.parametrize("version", range(0, 6))
def test_init_producer_id_bumps_and_fences_in_every_version(raw: RawClient, version: int) -> None:
    tid = f"init-v{version}"
    first = _init(raw, tid, version)
    second = _init(raw, tid, version)
    assert first["error_code"] == second["error_code"] == 0
    assert second["producer_id"] == first["producer_id"]
    assert second["producer_epoch"] == first["producer_epoch"] + 1
    assert _init(raw, tid, version, transaction_timeout_ms=10**9)["error_code"] == (
        errors.INVALID_TRANSACTION_TIMEOUT
    )
    if version >= 3:  # KIP-360: the client names the epoch it has; an older one is fenced
        stale = _init(raw, tid, version, producer_id=first["producer_id"], producer_epoch=0)
        fenced = errors.PRODUCER_FENCED if version >= 4 else errors.INVALID_PRODUCER_EPOCH
        assert stale["error_code"] == fenced


@pytest.mark.parametrize("version", range(0, 4))
def test_add_partitions_and_end_txn_fencing_by_version(raw: RawClient, version: int) -> None:
    topic, tid = _topic(raw), f"fence-v{version}"
    old = _init(raw, tid)
    new = _init(raw, tid)
    pid = new["producer_id"]
    fenced = errors.PRODUCER_FENCED if version >= 2 else errors.INVALID_PRODUCER_EPOCH
    assert _add_partitions(raw, version, tid, pid, old["producer_epoch"], topic, 0) == {0: fenced}
    assert _add_partitions(raw, version, tid, pid, new["producer_epoch"], topic, 0, 1) == {
        0: 0,
        1: 0,
    }
    assert _add_partitions(raw, version, tid, pid, new["producer_epoch"], topic, 0, 7) == {
        0: errors.OPERATION_NOT_ATTEMPTED,
        7: errors.UNKNOWN_TOPIC_OR_PARTITION,
    }
    offsets = raw.request(
        "AddOffsetsToTxn",
        version,
        {"transactional_id": tid, "producer_id": pid, "producer_epoch": 0, "group_id": "g"},
        api_key=25,
    )
    assert offsets["error_code"] == fenced
    assert _end(raw, version, tid, pid, old["producer_epoch"], True) == fenced
    assert _end(raw, version, tid, pid, new["producer_epoch"], True) == 0
    assert _end(raw, version, tid, pid, new["producer_epoch"], True) == 0  # a retry
    assert _end(raw, version, tid, pid, new["producer_epoch"], False) == errors.INVALID_TXN_STATE
    assert _end(raw, version, tid, pid + 1, new["producer_epoch"], True) == (
        errors.INVALID_PRODUCER_ID_MAPPING
    )
    # Jepsen's Bufstream report: a delayed EndTxn of the old epoch, arriving while the new
    # instance has a transaction open, must not end that transaction.
    assert _add_partitions(raw, version, tid, pid, new["producer_epoch"], topic, 1) == {1: 0}
    assert _end(raw, version, tid, pid, old["producer_epoch"], True) == fenced
    described = raw.request("DescribeTransactions", 0, {"transactional_ids": [tid]}, api_key=65)
    assert described["transaction_states"][0]["transaction_state"] == "Ongoing"


def test_produce_verifies_transactional_batches(raw: RawClient) -> None:
    topic, tid = _topic(raw), "verify"
    init = _init(raw, tid)
    pid, epoch = init["producer_id"], init["producer_epoch"]

    def batch(p: int, e: int, seq: int) -> bytes:
        return build_batch(
            [Record(value=b"v")],
            producer_id=p,
            producer_epoch=e,
            base_sequence=seq,
            transactional=True,
        )

    # Not added to a transaction yet: refused, whatever the partition.
    assert _produce(raw, topic, 0, batch(pid, epoch, 0)) == errors.INVALID_TXN_STATE
    assert _add_partitions(raw, 3, tid, pid, epoch, topic, 0) == {0: 0}
    assert _produce(raw, topic, 0, batch(pid, epoch, 0)) == 0
    assert _produce(raw, topic, 1, batch(pid, epoch, 0)) == errors.INVALID_TXN_STATE
    assert _produce(raw, topic, 0, batch(pid, epoch - 1 if epoch else 5, 1)) == (
        errors.INVALID_PRODUCER_EPOCH
    )
    assert _produce(raw, topic, 0, batch(pid + 99, 0, 0)) == errors.INVALID_PRODUCER_ID_MAPPING
    marker = build_control_batch(pid, epoch, commit=True, coordinator_epoch=0, timestamp_ms=0)
    assert _produce(raw, topic, 0, marker) == ErrorCode.CORRUPT_MESSAGE
    assert _end(raw, 3, tid, pid, epoch, True) == 0
    # A late batch of the finished transaction cannot join the next one.
    assert _produce(raw, topic, 0, batch(pid, epoch, 1)) == errors.INVALID_TXN_STATE


def _offset_fetch(raw: RawClient, group: str, topic: str, stable: bool) -> dict[str, Any]:
    body = raw.request(
        "OffsetFetch",
        7,
        {
            "group_id": group,
            "topics": [{"name": topic, "partition_indexes": [0]}],
            "require_stable": stable,
        },
        api_key=9,
    )
    return dict(body["topics"][0]["partitions"][0])


def _txn_offset_commit(
    raw: RawClient,
    tid: str,
    pid: int,
    epoch: int,
    group: str,
    topic: str,
    offset: int,
    **extra: Any,
) -> int:
    body = raw.request(
        "TxnOffsetCommit",
        3,
        {
            "transactional_id": tid,
            "group_id": group,
            "producer_id": pid,
            "producer_epoch": epoch,
            "generation_id": -1,
            "member_id": "",
            "group_instance_id": None,
            "topics": [
                {
                    "name": topic,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": offset,
                            "committed_leader_epoch": -1,
                            "committed_metadata": None,
                        }
                    ],
                }
            ],
            **extra,
        },
        api_key=28,
    )
    return int(body["topics"][0]["partitions"][0]["error_code"])


def test_require_stable_and_txn_offset_commit_checks(raw: RawClient) -> None:
    topic, tid, group = _topic(raw, 1), "offsets", "stable-group"
    init = _init(raw, tid)
    pid, epoch = init["producer_id"], init["producer_epoch"]
    # Without AddOffsetsToTxn the group is not part of the transaction.
    assert _txn_offset_commit(raw, tid, pid, epoch, group, topic, 3) == errors.INVALID_TXN_STATE
    add = {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "group_id": group}
    assert raw.request("AddOffsetsToTxn", 3, add, api_key=25)["error_code"] == 0
    assert _txn_offset_commit(raw, tid, pid, epoch + 1, group, topic, 3) == (
        errors.INVALID_PRODUCER_EPOCH
    )
    # KIP-447: a named generation of a group that has none is refused.
    assert _txn_offset_commit(raw, tid, pid, epoch, group, topic, 3, generation_id=4) == (
        errors.ILLEGAL_GENERATION
    )
    assert _txn_offset_commit(raw, tid, pid, epoch, group, topic, 3) == 0
    everything = raw.request(
        "OffsetFetch", 7, {"group_id": group, "topics": None, "require_stable": True}, api_key=9
    )
    assert [
        (t["name"], p["partition_index"], p["error_code"])
        for t in everything["topics"]
        for p in t["partitions"]
    ] == [(topic, 0, errors.UNSTABLE_OFFSET_COMMIT)]
    pending = _offset_fetch(raw, group, topic, stable=True)
    assert (pending["error_code"], pending["committed_offset"]) == (
        errors.UNSTABLE_OFFSET_COMMIT,
        -1,
    )
    assert _offset_fetch(raw, group, topic, stable=False)["committed_offset"] == -1
    assert _end(raw, 3, tid, pid, epoch, True) == 0
    done = _offset_fetch(raw, group, topic, stable=True)
    assert (done["error_code"], done["committed_offset"]) == (0, 3)


@pytest.mark.parametrize("version", range(1, 5))
def test_find_coordinator_for_transactional_ids(
    raw: RawClient, strom_broker: Broker, version: int
) -> None:
    body: dict[str, Any] = {"key_type": 1}
    body.update({"coordinator_keys": ["a", "b"]} if version >= 4 else {"key": "a"})
    answer = raw.request("FindCoordinator", version, body, api_key=10)
    found = answer["coordinators"] if version >= 4 else [answer]
    assert [(c["error_code"], c["port"]) for c in found] == [(0, strom_broker.port)] * len(found)
    body["key_type"] = 2  # share groups: not served
    answer = raw.request("FindCoordinator", version, body, api_key=10)
    found = answer["coordinators"] if version >= 4 else [answer]
    assert {c["error_code"] for c in found} == {errors.INVALID_REQUEST}
