"""Consumer groups (classic protocol), committed offsets, and FindCoordinator for groups and
transactional ids."""

from __future__ import annotations

from typing import Any

from strom.broker.handlers.base import Body, Context, api
from strom.kafka.protocol.errors import ErrorCode

_CLASSIC = "classic"
# FindCoordinator key types this broker coordinates: consumer groups and transactional ids.
_KEY_TYPES = (0, 1)


def committed_offsets(topics: list[dict[str, Any]]) -> list[tuple[str, int, int, int, str | None]]:
    """The (topic, partition, offset, leader epoch, metadata) entries of an OffsetCommit's or a
    TxnOffsetCommit's ``topics``."""
    return [
        (
            t["name"],
            p["partition_index"],
            p["committed_offset"],
            p.get("committed_leader_epoch", -1),
            p["committed_metadata"],
        )
        for t in topics
        for p in t["partitions"]
    ]


def _coordinator(ctx: Context, key: str, key_type: int) -> dict[str, Any]:
    state = ctx.state
    if key_type not in _KEY_TYPES:
        return {
            "key": key,
            "node_id": -1,
            "host": "",
            "port": -1,
            "error_code": int(ErrorCode.INVALID_REQUEST),
            "error_message": f"unsupported coordinator key type {key_type}",
        }
    return {
        "key": key,
        "node_id": state.config.node_id,
        "host": state.advertised_host,
        "port": state.advertised_port,
        "error_code": 0,
        "error_message": None,
    }


@api(10, "FindCoordinator", 0, 4)
async def find_coordinator(ctx: Context, req: Body) -> Body:
    # This broker coordinates every group and every transactional id.
    keys = req["coordinator_keys"] if ctx.version >= 4 else [req["key"]]
    key_type = req.get("key_type", 0)
    coordinators = [_coordinator(ctx, k, key_type) for k in keys]
    first = coordinators[0] if coordinators else _coordinator(ctx, "", key_type)
    return {"throttle_time_ms": 0, **first, "coordinators": coordinators}


@api(11, "JoinGroup", 0, 9)
async def join_group(ctx: Context, req: Body) -> Body:
    # v8's reason (KIP-800) is informational; v9's skip_assignment stays false: strom does not
    # track static leaders across restarts, so every leader computes the assignment.
    result = await ctx.state.groups.join_group(
        group_id=req["group_id"],
        member_id=req["member_id"],
        group_instance_id=req.get("group_instance_id"),
        client_id=ctx.header.client_id or "",
        client_host=f"/{ctx.client_host}",
        session_timeout_ms=req["session_timeout_ms"],
        # v0 has no rebalance timeout; Kafka uses the session timeout then.
        rebalance_timeout_ms=req["rebalance_timeout_ms"]
        if ctx.version >= 1
        else req["session_timeout_ms"],
        protocol_type=req["protocol_type"],
        protocols=[(p["name"], p["metadata"]) for p in req["protocols"]],
        require_known_member_id=ctx.version >= 4,
    )
    return {
        "throttle_time_ms": 0,
        "error_code": result.error_code,
        "generation_id": result.generation_id,
        "protocol_type": result.protocol_type,
        "protocol_name": result.protocol_name if result.protocol_name is not None else "",
        "leader": result.leader,
        "skip_assignment": False,
        "member_id": result.member_id,
        "members": [
            {"member_id": m, "group_instance_id": i, "metadata": meta}
            for m, i, meta in result.members
        ],
    }


@api(14, "SyncGroup", 0, 5)
async def sync_group(ctx: Context, req: Body) -> Body:
    result = await ctx.state.groups.sync_group(
        group_id=req["group_id"],
        generation_id=req["generation_id"],
        member_id=req["member_id"],
        group_instance_id=req.get("group_instance_id"),
        protocol_type=req.get("protocol_type"),
        protocol_name=req.get("protocol_name"),
        assignments=[(a["member_id"], a["assignment"]) for a in req["assignments"]],
    )
    return {
        "throttle_time_ms": 0,
        "error_code": result.error_code,
        "protocol_type": result.protocol_type,
        "protocol_name": result.protocol_name,
        "assignment": result.assignment,
    }


@api(12, "Heartbeat", 0, 4)
async def heartbeat(ctx: Context, req: Body) -> Body:
    code = ctx.state.groups.heartbeat(
        group_id=req["group_id"],
        generation_id=req["generation_id"],
        member_id=req["member_id"],
        group_instance_id=req.get("group_instance_id"),
    )
    return {"throttle_time_ms": 0, "error_code": code}


@api(13, "LeaveGroup", 0, 5)
async def leave_group(ctx: Context, req: Body) -> Body:
    if ctx.version >= 3:
        members = [(m["member_id"], m["group_instance_id"]) for m in req["members"]]
    else:
        members = [(req["member_id"], None)]
    result = ctx.state.groups.leave_group(req["group_id"], members)
    code = result.error_code
    if ctx.version < 3 and code == 0 and result.members:
        code = result.members[0].error_code  # v0-2 carry the one member's error at the top
    return {
        "throttle_time_ms": 0,
        "error_code": code,
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "error_code": m.error_code,
            }
            for m in result.members
        ],
    }


@api(16, "ListGroups", 0, 5)
async def list_groups(ctx: Context, req: Body) -> Body:
    states = req.get("states_filter") or None
    # v5's types filter (KIP-848): every strom group is of the classic type.
    types = {t.lower() for t in req.get("types_filter") or ()}
    listings = ctx.state.groups.list_groups(states) if not types or _CLASSIC in types else []
    return {
        "throttle_time_ms": 0,
        "error_code": 0,
        "groups": [
            {
                "group_id": g.group_id,
                "protocol_type": g.protocol_type,
                "group_state": g.state,
                "group_type": _CLASSIC,
            }
            for g in listings
        ],
    }


@api(15, "DescribeGroups", 0, 5)
async def describe_groups(ctx: Context, req: Body) -> Body:
    groups = []
    for group_id in req["groups"]:
        d = ctx.state.groups.describe_group(group_id)
        groups.append(
            {
                "error_code": d.error_code,
                "error_message": None,
                "group_id": group_id,
                "group_state": d.state,
                "protocol_type": d.protocol_type,
                "protocol_data": d.protocol,
                "members": [
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "member_metadata": m.member_metadata,
                        "member_assignment": m.member_assignment,
                    }
                    for m in d.members
                ],
                "authorized_operations": -2147483648,
            }
        )
    return {"throttle_time_ms": 0, "groups": groups}


@api(42, "DeleteGroups", 0, 2)
async def delete_groups(ctx: Context, req: Body) -> Body:
    results = ctx.state.groups.delete_groups(req["groups_names"])
    return {
        "throttle_time_ms": 0,
        "results": [{"group_id": g, "error_code": c} for g, c in results.items()],
    }


@api(8, "OffsetCommit", 0, 9)
async def offset_commit(ctx: Context, req: Body) -> Body:
    # v0 carries no generation or member: the codec fills in -1 and "", a standalone commit (to a
    # group with no members), where Kafka 3.9 wrote v0 commits to ZooKeeper unchecked. v1's
    # per-partition commit_timestamp and v2-4's retention_time_ms only set when Kafka would expire
    # the offsets; strom never expires committed offsets, so both are accepted and have no effect.
    # v9 only allows KIP-848 member epochs, for groups of the consumer type; for classic groups
    # (all of strom's) it is v8.
    offsets = committed_offsets(req["topics"])
    results = ctx.state.groups.commit_offsets(
        req["group_id"],
        req["generation_id_or_member_epoch"],
        req["member_id"],
        req.get("group_instance_id"),
        offsets,
    )
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_topic.setdefault(r.topic, []).append(
            {"partition_index": r.partition, "error_code": r.error_code}
        )
    return {
        "throttle_time_ms": 0,
        "topics": [{"name": name, "partitions": parts} for name, parts in by_topic.items()],
    }


def _fetch_group(
    ctx: Context, group_id: str, topics: list[dict[str, Any]] | None, require_stable: bool
) -> list[Any]:
    wanted = None
    if topics is not None:
        wanted = [(t["name"], p) for t in topics for p in t["partition_indexes"]]
    committed = ctx.state.groups.fetch_offsets(group_id, wanted)
    # KIP-447: a consumer asking for stable offsets must not start from an offset that an open
    # transaction may still move; it retries until the transaction is decided.
    unstable = ctx.state.offsets.pending_partitions(group_id) if require_stable else set()
    if wanted is None:  # all of the group's partitions: those with only staged offsets too
        committed.update(
            ctx.state.groups.fetch_offsets(group_id, sorted(unstable - set(committed)))
        )
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), c in sorted(committed.items()):
        pending = (topic, partition) in unstable
        by_topic.setdefault(topic, []).append(
            {
                "partition_index": partition,
                "committed_offset": -1 if pending else c.offset,
                "committed_leader_epoch": -1 if pending else c.leader_epoch,
                "metadata": "" if pending else c.metadata,
                "error_code": int(ErrorCode.UNSTABLE_OFFSET_COMMIT) if pending else 0,
            }
        )
    return [{"name": name, "partitions": parts} for name, parts in by_topic.items()]


@api(9, "OffsetFetch", 0, 8)
async def offset_fetch(ctx: Context, req: Body) -> Body:
    stable = bool(req.get("require_stable", False))
    if ctx.version >= 8:
        groups = [
            {
                "group_id": g["group_id"],
                "topics": _fetch_group(ctx, g["group_id"], g["topics"], stable),
                "error_code": 0,
            }
            for g in req["groups"]
        ]
        return {"throttle_time_ms": 0, "groups": groups}
    return {
        "throttle_time_ms": 0,
        "topics": _fetch_group(ctx, req["group_id"], req["topics"], stable),
        "error_code": 0,
    }
