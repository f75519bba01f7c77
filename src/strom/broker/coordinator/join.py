"""JoinGroup's decisions for one group: who joins, who is fenced, when to rebalance.

Functions here are synchronous: they mutate the group and either answer at once (a
:class:`JoinResult`) or hand back the member id and the future its answer will arrive on.

* A new dynamic member of a v4+ client gets MEMBER_ID_REQUIRED and a generated id, which is held
  as pending (for its session timeout) until it rejoins with it (KIP-394).
* A static member (group.instance.id) rejoining with an empty member id takes over the previous
  id of its instance: the old id is fenced (FENCED_INSTANCE_ID) and, if the group is Stable and
  the chosen protocol would not change, no rebalance happens (KIP-345).
* A known member rejoining triggers a rebalance unless it is a follower with unchanged metadata
  (then it gets the current generation back); the leader rejoining always rebalances.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from strom.broker.coordinator import errors
from strom.broker.coordinator.group import Group, GroupState, Member, validate_member
from strom.broker.coordinator.rebalance import (
    GroupConfig,
    maybe_complete_join,
    maybe_prepare_rebalance,
    remove_member,
)
from strom.broker.coordinator.results import JoinResult, SyncResult

__all__ = ["JoinOutcome", "JoinSpec", "abandon_join", "join"]

log = logging.getLogger("strom.broker.groups")

_S = GroupState

JoinOutcome = JoinResult | tuple[str, asyncio.Future[JoinResult]]


@dataclass(frozen=True, slots=True)
class JoinSpec:
    """What a JoinGroup request says about the joining member."""

    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]

    def apply(self, member: Member) -> None:
        member.client_id = self.client_id
        member.client_host = self.client_host
        member.session_timeout_ms = self.session_timeout_ms
        member.rebalance_timeout_ms = self.rebalance_timeout_ms
        member.protocols = self.protocols


def join(
    group: Group,
    cfg: GroupConfig,
    member_id: str,
    instance_id: str | None,
    spec: JoinSpec,
    require_known: bool,
    now: int,
) -> JoinOutcome:
    """Handle a JoinGroup for an existing (possibly just created) group."""
    if group.is_(_S.DEAD):
        return JoinResult(errors.COORDINATOR_NOT_AVAILABLE, member_id)
    if not group.supports(spec.protocol_type, [name for name, _ in spec.protocols]):
        return JoinResult(errors.INCONSISTENT_GROUP_PROTOCOL, member_id)
    if not member_id:
        new_id = f"{instance_id or spec.client_id}-{uuid.uuid4()}"
        if instance_id is not None:
            if instance_id in group.static_members:
                return _replace_static(group, cfg, instance_id, new_id, spec, now)
            return _add_member(group, cfg, new_id, instance_id, spec, now)
        if require_known:
            group.pending_members[new_id] = now + spec.session_timeout_ms
            return JoinResult(errors.MEMBER_ID_REQUIRED, new_id)
        return _add_member(group, cfg, new_id, None, spec, now)
    if member_id in group.pending_members:
        del group.pending_members[member_id]
        if instance_id is not None and instance_id in group.static_members:
            return _replace_static(group, cfg, instance_id, member_id, spec, now)
        return _add_member(group, cfg, member_id, instance_id, spec, now)
    error = validate_member(group, member_id, instance_id)
    if error is not None:
        return JoinResult(error, member_id)
    member = group.members[member_id]
    if group.is_(_S.PREPARING_REBALANCE):
        return _update_member(group, cfg, member, spec, now)
    if group.is_(_S.COMPLETING_REBALANCE):
        # A retry of a join whose answer was lost: repeat the answer, leader included.
        if member.matches(spec.protocols):
            return _current_generation(group, member_id, with_members=True)
        return _update_member(group, cfg, member, spec, now)
    if group.is_(_S.STABLE):
        # The leader rejoining forces a rebalance (it saw e.g. new partitions).
        if group.is_leader(member_id) or not member.matches(spec.protocols):
            return _update_member(group, cfg, member, spec, now)
        return _current_generation(group, member_id, with_members=False)
    return JoinResult(errors.UNKNOWN_MEMBER_ID, member_id)


def _new_waiter() -> asyncio.Future[JoinResult]:
    return asyncio.get_running_loop().create_future()


def _add_member(
    group: Group,
    cfg: GroupConfig,
    member_id: str,
    instance_id: str | None,
    spec: JoinSpec,
    now: int,
) -> tuple[str, asyncio.Future[JoinResult]]:
    member = Member(
        member_id=member_id,
        group_instance_id=instance_id,
        client_id=spec.client_id,
        client_host=spec.client_host,
        session_timeout_ms=spec.session_timeout_ms,
        rebalance_timeout_ms=spec.rebalance_timeout_ms,
        protocol_type=spec.protocol_type,
        protocols=spec.protocols,
        deadline_ms=now + cfg.new_member_join_timeout_ms,
    )
    waiter = member.join_waiter = _new_waiter()
    if group.is_(_S.PREPARING_REBALANCE) and group.initial_delay_remaining_ms is not None:
        group.new_member_added = True
    group.add(member)
    maybe_prepare_rebalance(group, cfg, now)
    maybe_complete_join(group, cfg, now)
    return member_id, waiter


def _update_member(
    group: Group, cfg: GroupConfig, member: Member, spec: JoinSpec, now: int
) -> tuple[str, asyncio.Future[JoinResult]]:
    # A second JoinGroup from the same member supersedes the first one.
    member.answer_join(JoinResult(errors.REBALANCE_IN_PROGRESS, member.member_id))
    spec.apply(member)
    waiter = member.join_waiter = _new_waiter()
    maybe_prepare_rebalance(group, cfg, now)
    maybe_complete_join(group, cfg, now)
    return member.member_id, waiter


def _replace_static(
    group: Group, cfg: GroupConfig, instance_id: str, new_id: str, spec: JoinSpec, now: int
) -> JoinResult | tuple[str, asyncio.Future[JoinResult]]:
    """A static member restarted: fence the old id, give its place to ``new_id``."""
    old_leader = group.leader_id
    old, member = group.replace_static(instance_id, new_id)
    old.answer_join(JoinResult(errors.FENCED_INSTANCE_ID, old.member_id))
    old.answer_sync(SyncResult(errors.FENCED_INSTANCE_ID))
    spec.apply(member)
    member.deadline_ms = now + spec.session_timeout_ms
    log.info("group %s: static member %s now has id %s", group.group_id, instance_id, new_id)
    if group.is_(_S.STABLE) and group.select_protocol() == group.protocol_name:
        # No rebalance. Report the old leader id so the new member does not believe it
        # leads and send an assignment that a Stable group would not propagate.
        return JoinResult(
            errors.NONE,
            new_id,
            group.generation_id,
            group.protocol_type,
            group.protocol_name,
            old_leader or "",
        )
    waiter = member.join_waiter = _new_waiter()
    maybe_prepare_rebalance(group, cfg, now)
    maybe_complete_join(group, cfg, now)
    return new_id, waiter


def _current_generation(group: Group, member_id: str, *, with_members: bool) -> JoinResult:
    leader = group.is_leader(member_id) and with_members
    return JoinResult(
        errors.NONE,
        member_id,
        group.generation_id,
        group.protocol_type,
        group.protocol_name,
        group.leader_id or "",
        group.join_members() if leader else [],
    )


def abandon_join(
    group: Group, cfg: GroupConfig, member_id: str, waiter: asyncio.Future[JoinResult], now: int
) -> None:
    """The JoinGroup request went away (connection closed). A new member is dropped at once;
    a known one simply counts as not rejoined."""
    member = group.members.get(member_id)
    if member is None or member.join_waiter is not waiter:
        return
    member.join_waiter = None
    if member.is_new:
        remove_member(group, cfg, member_id, now)
    else:
        maybe_complete_join(group, cfg, now)
