"""Metadata: one broker, which leads every partition."""

from __future__ import annotations

from typing import Any

from strom.broker.handlers.base import Body, Context, api
from strom.broker.handlers.topics import ensure_topic, topic_by_id
from strom.broker.log import TopicInfo
from strom.kafka.protocol.errors import ErrorCode

_NO_ID = b"\x00" * 16


def _topic_entry(node_id: int, info: TopicInfo) -> dict[str, Any]:
    return {
        "error_code": 0,
        "name": info.name,
        "topic_id": info.topic_id,
        "is_internal": False,
        "partitions": [
            {
                "error_code": 0,
                "partition_index": p,
                "leader_id": node_id,
                "leader_epoch": 0,
                "replica_nodes": [node_id],
                "isr_nodes": [node_id],
                "offline_replicas": [],
            }
            for p in range(info.partitions)
        ],
        "topic_authorized_operations": -2147483648,
    }


@api(3, "Metadata", 0, 12)
async def metadata(ctx: Context, req: Body) -> Body:
    state = ctx.state
    node = state.config.node_id
    requested = req["topics"]
    topics: list[dict[str, Any]] = []
    if requested is None or (ctx.version == 0 and not requested):
        topics = [_topic_entry(node, info) for info in sorted(state.logs.topics().values())]
    else:
        allow = bool(req.get("allow_auto_topic_creation", True))
        for t in requested:
            name = t.get("name")
            if name is None and ctx.version < 12:
                # v10-11 carry topic ids but Kafka serves lookups by id only from v12; their
                # response has no null name, so Kafka answers INVALID_REQUEST with "" instead.
                topics.append(
                    {
                        "error_code": ErrorCode.INVALID_REQUEST,
                        "name": "",
                        "topic_id": t.get("topic_id") or _NO_ID,
                        "partitions": [],
                    }
                )
                continue
            if name is None:
                found = topic_by_id(state, t.get("topic_id") or _NO_ID)
                if found is None:
                    topics.append(
                        {
                            "error_code": ErrorCode.UNKNOWN_TOPIC_ID,
                            "name": None,
                            "topic_id": t.get("topic_id") or _NO_ID,
                            "partitions": [],
                        }
                    )
                    continue
                topics.append(_topic_entry(node, found))
                continue
            result = ensure_topic(state, name, allow)
            if isinstance(result, ErrorCode):
                topics.append({"error_code": int(result), "name": name, "partitions": []})
            else:
                topics.append(_topic_entry(node, result))
    return {
        "throttle_time_ms": 0,
        "brokers": [
            {
                "node_id": node,
                "host": state.advertised_host,
                "port": state.advertised_port,
                "rack": None,
            }
        ],
        "cluster_id": state.cluster_id,
        "controller_id": node,
        "topics": topics,
        "cluster_authorized_operations": -2147483648,
    }
