"""Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs."""

from __future__ import annotations

import logging
from typing import Any

from strom.broker.handlers.base import Body, Context, api
from strom.broker.handlers.topics import topic_by_id
from strom.broker.log import InvalidConfigError, InvalidTopicError, LogError, TopicExistsError
from strom.kafka.protocol.errors import ErrorCode

log = logging.getLogger("strom.broker")

TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4
# Kafka's controller refuses a request that would create more partitions than this in total
# (POLICY_VIOLATION, "Excessively large number of partitions per request."). Without a cap one
# CreateTopics asking for 2**31-1 partitions would have the broker make directories for hours
# while every client waits.
MAX_PARTITIONS_PER_REQUEST = 10_000
_TOO_MANY_PARTITIONS = "Excessively large number of partitions per request."
_DEFAULT_CONFIG_SOURCE = 5
_TOPIC_CONFIG_SOURCE = 1


def _create_one(ctx: Context, t: dict[str, Any], validate_only: bool) -> dict[str, Any]:
    state = ctx.state
    name = t["name"]
    out: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
    partitions = t["num_partitions"]
    replication = t["replication_factor"]
    if t["assignments"]:
        return {
            **out,
            "error_code": int(ErrorCode.INVALID_REQUEST),
            "error_message": "manual replica assignment is not supported",
        }
    if partitions == -1:
        partitions = state.config.default_partitions
    if partitions <= 0:
        return {
            **out,
            "error_code": int(ErrorCode.INVALID_PARTITIONS),
            "error_message": f"number of partitions must be positive, got {partitions}",
        }
    if replication not in (-1, 1):
        return {
            **out,
            "error_code": int(ErrorCode.INVALID_REPLICATION_FACTOR),
            "error_message": f"replication factor {replication} is larger than the number "
            "of brokers (1)",
        }
    configs = {c["name"]: c["value"] for c in t["configs"]}
    try:
        if validate_only:
            state.logs.validate_topic(name, partitions, configs)
            return {**out, "num_partitions": partitions, "replication_factor": 1}
        info = state.logs.create_topic(name, partitions, configs)
    except TopicExistsError:
        return {
            **out,
            "error_code": int(ErrorCode.TOPIC_ALREADY_EXISTS),
            "error_message": f"topic {name!r} already exists",
        }
    except InvalidTopicError as exc:
        return {
            **out,
            "error_code": int(ErrorCode.INVALID_TOPIC_EXCEPTION),
            "error_message": str(exc),
        }
    except InvalidConfigError as exc:
        return {**out, "error_code": int(ErrorCode.INVALID_CONFIG), "error_message": str(exc)}
    except LogError as exc:
        log.error("cannot create topic %r: %s", name, exc)
        return {**out, "error_code": int(ErrorCode.KAFKA_STORAGE_ERROR), "error_message": str(exc)}
    log.info("created topic %r with %d partition(s)", name, partitions)
    return {
        **out,
        "topic_id": info.topic_id,
        "num_partitions": info.partitions,
        "replication_factor": 1,
        "configs": _config_entries(ctx, name, None),
    }


@api(19, "CreateTopics", 0, 7)
async def create_topics(ctx: Context, req: Body) -> Body:
    default = ctx.state.config.default_partitions
    total = sum(
        default if t["num_partitions"] == -1 else max(t["num_partitions"], 0) for t in req["topics"]
    )
    if total > MAX_PARTITIONS_PER_REQUEST:
        refused = {
            "error_code": int(ErrorCode.POLICY_VIOLATION),
            "error_message": _TOO_MANY_PARTITIONS,
        }
        return {
            "throttle_time_ms": 0,
            "topics": [{"name": t["name"], **refused} for t in req["topics"]],
        }
    results = [_create_one(ctx, t, req["validate_only"]) for t in req["topics"]]
    return {"throttle_time_ms": 0, "topics": results}


@api(20, "DeleteTopics", 0, 6)
async def delete_topics(ctx: Context, req: Body) -> Body:
    state = ctx.state
    wanted: list[tuple[str | None, bytes]] = [(n, b"\x00" * 16) for n in req["topic_names"]]
    for t in req["topics"]:
        name = t["name"]
        if name is None:
            found = topic_by_id(state, t["topic_id"])
            name = found.name if found else None
        wanted.append((name, t["topic_id"]))
    results = []
    for name, topic_id in wanted:
        info = state.logs.topics().get(name) if name else None
        if info is None:
            code = (
                ErrorCode.UNKNOWN_TOPIC_ID if name is None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            )
            results.append({"name": name, "topic_id": topic_id, "error_code": int(code)})
            continue
        try:
            state.logs.delete_topic(info.name)
        except LogError as exc:
            log.error("cannot delete topic %r: %s", info.name, exc)
            results.append(
                {
                    "name": name,
                    "topic_id": info.topic_id,
                    "error_code": int(ErrorCode.KAFKA_STORAGE_ERROR),
                    "error_message": str(exc),
                }
            )
            continue
        state.offsets.delete_topic(info.name)
        # Idempotent producers' state lives with the partition logs, as in Kafka: kept, a producer
        # resending sequence 0 to a re-created topic would be told "duplicate" and lose the batch.
        state.sequences.forget_topic(info.name)
        log.info("deleted topic %r", info.name)
        results.append({"name": info.name, "topic_id": info.topic_id, "error_code": 0})
    return {"throttle_time_ms": 0, "responses": results}


@api(37, "CreatePartitions", 0, 3)
async def create_partitions(ctx: Context, req: Body) -> Body:
    state = ctx.state
    results = []
    added = 0
    for t in req["topics"]:
        name, count = t["name"], t["count"]
        info = state.logs.topics().get(name)
        code, message = ErrorCode.NONE, None
        if info is None:
            code, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
        elif count <= info.partitions:
            code = ErrorCode.INVALID_PARTITIONS
            message = f"topic {name!r} has {info.partitions} partitions; {count} would not add any"
        elif added + count - info.partitions > MAX_PARTITIONS_PER_REQUEST:
            code, message = ErrorCode.POLICY_VIOLATION, _TOO_MANY_PARTITIONS
        elif t["assignments"]:
            code, message = ErrorCode.INVALID_REQUEST, "manual replica assignment is not supported"
        else:
            added += count - info.partitions
            if not req["validate_only"]:
                try:
                    state.logs.add_partitions(name, count)
                except LogError as exc:
                    code, message = ErrorCode.KAFKA_STORAGE_ERROR, str(exc)
        results.append({"name": name, "error_code": int(code), "error_message": message})
    return {"throttle_time_ms": 0, "results": results}


def _config_entries(ctx: Context, topic: str, keys: list[str] | None) -> list[dict[str, Any]]:
    state = ctx.state
    info = state.logs.topics()[topic]
    effective = state.logs.topic_config(topic).describe()
    entries = []
    for key, value in sorted(effective.items()):
        if keys is not None and key not in keys:
            continue
        overridden = key in info.configs
        entries.append(
            {
                "name": key,
                "value": value,
                "read_only": False,
                "config_source": _TOPIC_CONFIG_SOURCE if overridden else _DEFAULT_CONFIG_SOURCE,
                "is_default": not overridden,
                "is_sensitive": False,
                "synonyms": [],
            }
        )
    return entries


@api(32, "DescribeConfigs", 0, 4)
async def describe_configs(ctx: Context, req: Body) -> Body:
    state = ctx.state
    results = []
    for r in req["resources"]:
        rtype, rname, keys = r["resource_type"], r["resource_name"], r["configuration_keys"]
        out: dict[str, Any] = {
            "resource_type": rtype,
            "resource_name": rname,
            "error_code": 0,
            "error_message": None,
            "configs": [],
        }
        if rtype == TOPIC_RESOURCE:
            if rname not in state.logs.topics():
                out.update(
                    error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                    error_message=f"topic {rname!r} does not exist",
                )
            else:
                out["configs"] = _config_entries(ctx, rname, keys)
        elif rtype == BROKER_RESOURCE:
            if rname not in ("", str(state.config.node_id)):
                out.update(
                    error_code=int(ErrorCode.INVALID_REQUEST),
                    error_message=f"unknown broker {rname!r}",
                )
        else:
            out.update(
                error_code=int(ErrorCode.INVALID_REQUEST),
                error_message=f"resource type {rtype} is not supported",
            )
        results.append(out)
    return {"throttle_time_ms": 0, "results": results}
