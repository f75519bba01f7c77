"""Transactions (KIP-98, KIP-447): InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
TxnOffsetCommit, EndTxn, and the tooling APIs DescribeTransactions, ListTransactions and
DescribeProducers.

Versions are those Kafka 3.9 serves to clients. AddPartitionsToTxn stops at v3: v4+ batch
several transactions for broker-to-broker verification, which a single node does in-process
(:meth:`TransactionCoordinator.verify_produce`). What the clients send: librdkafka 2.x
InitProducerId up to v4, AddPartitionsToTxn and AddOffsetsToTxn v0, TxnOffsetCommit up to v3,
EndTxn up to v1; kafka-python 3 up to v4/v3/v3/v3/v3; aiokafka v0 of each.

A stale epoch is PRODUCER_FENCED from the version each API learnt it (InitProducerId v4,
AddPartitionsToTxn, AddOffsetsToTxn and EndTxn v2) and INVALID_PRODUCER_EPOCH before;
TxnOffsetCommit always says INVALID_PRODUCER_EPOCH, as Kafka's group coordinator does.
"""

from __future__ import annotations

from typing import Any

from strom.broker.coordinator import errors
from strom.broker.handlers.base import Body, Context, api
from strom.broker.handlers.groups import committed_offsets

__all__: list[str] = []


def _fenced(code: int, version: int, since: int | None) -> int:
    """PRODUCER_FENCED as the request's version can say it."""
    if code == errors.PRODUCER_FENCED and (since is None or version < since):
        return errors.INVALID_PRODUCER_EPOCH
    return code


@api(22, "InitProducerId", 0, 5)
async def init_producer_id(ctx: Context, req: Body) -> Body:
    state = ctx.state
    transactional_id = req["transactional_id"]
    if transactional_id is None:
        result = state.producers.init_idempotent()
    else:
        result = state.transactions.init_producer_id(
            transactional_id,
            req["transaction_timeout_ms"],
            req.get("producer_id", -1),
            req.get("producer_epoch", -1),
        )
    return {
        "throttle_time_ms": 0,
        "error_code": _fenced(result.error_code, ctx.version, 4),
        "producer_id": result.producer_id,
        "producer_epoch": result.producer_epoch,
    }


@api(24, "AddPartitionsToTxn", 0, 3)
async def add_partitions_to_txn(ctx: Context, req: Body) -> Body:
    wanted = [(t["name"], p) for t in req["v3_and_below_topics"] for p in t["partitions"]]
    codes = ctx.state.transactions.add_partitions(
        req["v3_and_below_transactional_id"],
        req["v3_and_below_producer_id"],
        req["v3_and_below_producer_epoch"],
        wanted,
    )
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), code in codes.items():
        by_topic.setdefault(topic, []).append(
            {"partition_index": partition, "partition_error_code": _fenced(code, ctx.version, 2)}
        )
    return {
        "throttle_time_ms": 0,
        "results_by_topic_v3_and_below": [
            {"name": name, "results_by_partition": parts} for name, parts in by_topic.items()
        ],
    }


@api(25, "AddOffsetsToTxn", 0, 4)
async def add_offsets_to_txn(ctx: Context, req: Body) -> Body:
    code = ctx.state.transactions.add_offsets(
        req["transactional_id"], req["producer_id"], req["producer_epoch"], req["group_id"]
    )
    return {"throttle_time_ms": 0, "error_code": _fenced(code, ctx.version, 2)}


@api(28, "TxnOffsetCommit", 0, 4)
async def txn_offset_commit(ctx: Context, req: Body) -> Body:
    state = ctx.state
    group_id = req["group_id"]
    offsets = committed_offsets(req["topics"])
    code = state.transactions.check_offset_commit(
        req["transactional_id"], req["producer_id"], req["producer_epoch"], group_id
    )
    if code != errors.NONE:
        results = [(t, p, _fenced(code, ctx.version, None)) for t, p, *_ in offsets]
    else:
        staged = state.groups.commit_txn_offsets(
            group_id,
            req["producer_id"],
            req.get("generation_id", -1),
            req.get("member_id", ""),
            req.get("group_instance_id"),
            offsets,
        )
        results = [(r.topic, r.partition, r.error_code) for r in staged]
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, partition, error in results:
        by_topic.setdefault(topic, []).append({"partition_index": partition, "error_code": error})
    return {
        "throttle_time_ms": 0,
        "topics": [{"name": name, "partitions": parts} for name, parts in by_topic.items()],
    }


@api(26, "EndTxn", 0, 4)
async def end_txn(ctx: Context, req: Body) -> Body:
    code = ctx.state.transactions.end_txn(
        req["transactional_id"],
        req["producer_id"],
        req["producer_epoch"],
        commit=req["committed"],
    )
    return {"throttle_time_ms": 0, "error_code": _fenced(code, ctx.version, 2)}


@api(65, "DescribeTransactions", 0, 0)
async def describe_transactions(ctx: Context, req: Body) -> Body:
    states = []
    for transactional_id in req["transactional_ids"]:
        d = ctx.state.transactions.describe(transactional_id)
        by_topic: dict[str, list[int]] = {}
        for topic, partition in d.partitions:
            by_topic.setdefault(topic, []).append(partition)
        states.append(
            {
                "error_code": d.error_code,
                "transactional_id": transactional_id,
                "transaction_state": d.state,
                "transaction_timeout_ms": d.timeout_ms,
                "transaction_start_time_ms": d.start_ms,
                "producer_id": d.producer_id,
                "producer_epoch": d.producer_epoch,
                "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
            }
        )
    return {"throttle_time_ms": 0, "transaction_states": states}


@api(66, "ListTransactions", 0, 1)
async def list_transactions(ctx: Context, req: Body) -> Body:
    unknown, listing = ctx.state.transactions.list_transactions(
        req["state_filters"], req["producer_id_filters"], req.get("duration_filter", -1)
    )
    return {
        "throttle_time_ms": 0,
        "error_code": errors.NONE,
        "unknown_state_filters": unknown,
        "transaction_states": [
            {
                "transactional_id": t.transactional_id,
                "producer_id": t.producer_id,
                "transaction_state": t.state,
            }
            for t in listing
        ],
    }


@api(61, "DescribeProducers", 0, 0)
async def describe_producers(ctx: Context, req: Body) -> Body:
    logs = ctx.state.logs
    topics = []
    for t in req["topics"]:
        info = logs.topics().get(t["name"])
        parts = []
        for index in t["partition_indexes"]:
            part: dict[str, Any] = {
                "partition_index": index,
                "error_code": errors.NONE,
                "error_message": None,
                "active_producers": [],
            }
            if info is None or not 0 <= index < info.partitions:
                part["error_code"] = errors.UNKNOWN_TOPIC_OR_PARTITION
            else:
                part["active_producers"] = [
                    {
                        "producer_id": p.producer_id,
                        "producer_epoch": p.producer_epoch,
                        "last_sequence": p.last_sequence,
                        "last_timestamp": p.last_timestamp,
                        "coordinator_epoch": p.coordinator_epoch,
                        "current_txn_start_offset": p.current_txn_start_offset,
                    }
                    for p in logs.partition(t["name"], index).producer_states()
                ]
            parts.append(part)
        topics.append({"name": t["name"], "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}
