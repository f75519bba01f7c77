"""The rebalance state machine of one group, as synchronous functions of (group, config, now).

Nothing here awaits or reads a clock: every function takes ``now_ms`` and resolves member
waiters (futures) as its side effect, so tests can drive it with any time they like. The
coordinator calls these from its request methods and from :func:`expire_group`, which its runner
invokes at each deadline.

Guarantees:

* Every member waiter is answered exactly once: with a result, or with an error when the member
  is removed, fenced, or the rebalance restarts. No request is left hanging by the coordinator.
* A join phase ends when every known member has rejoined (after the initial delay, for a group
  that was Empty), or at the rebalance deadline; dynamic members that did not rejoin by then
  are removed. Static members stay until their session times out (KIP-345).
* Members waiting on a JoinGroup or SyncGroup answer do not expire; new members (never joined
  successfully) expire after ``new_member_join_timeout_ms`` if their join is abandoned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from strom.broker.coordinator import errors
from strom.broker.coordinator.group import Group, GroupState, Member
from strom.broker.coordinator.results import JoinResult, SyncResult

__all__ = [
    "GroupConfig",
    "complete_join",
    "expire_group",
    "maybe_complete_join",
    "maybe_prepare_rebalance",
    "next_deadline",
    "prepare_rebalance",
    "remove_member",
]

log = logging.getLogger("strom.broker.groups")

_S = GroupState


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Coordinator settings. ``min_session_timeout_ms`` is lower than Kafka's 6 s default so
    tests on a laptop can use short sessions; the initial delay is 300 ms instead of 3 s."""

    initial_rebalance_delay_ms: int = 300
    min_session_timeout_ms: int = 1_000
    max_session_timeout_ms: int = 1_800_000
    new_member_join_timeout_ms: int = 300_000
    offset_metadata_max_bytes: int = 4096
    empty_group_retention_ms: int = 600_000


def maybe_prepare_rebalance(group: Group, cfg: GroupConfig, now_ms: int) -> None:
    if group.is_(_S.STABLE, _S.COMPLETING_REBALANCE, _S.EMPTY):
        prepare_rebalance(group, cfg, now_ms)


def prepare_rebalance(group: Group, cfg: GroupConfig, now_ms: int) -> None:
    """Start a join phase. Members awaiting SyncGroup are told REBALANCE_IN_PROGRESS."""
    if group.is_(_S.COMPLETING_REBALANCE):
        for member in group.members.values():
            member.assignment = b""
            member.answer_sync(SyncResult(errors.REBALANCE_IN_PROGRESS))
    group.pending_sync.clear()
    group.sync_deadline_ms = None
    if group.is_(_S.EMPTY):
        # KIP-134: wait for more members before the first generation, extending by the delay
        # for each newcomer, up to the rebalance timeout.
        delay = cfg.initial_rebalance_delay_ms
        group.initial_delay_remaining_ms = max(group.rebalance_timeout_ms() - delay, 0)
        group.new_member_added = False
        group.rebalance_deadline_ms = now_ms + delay
    else:
        group.initial_delay_remaining_ms = None
        group.rebalance_deadline_ms = now_ms + group.rebalance_timeout_ms()
    group.transition(_S.PREPARING_REBALANCE)
    log.debug("group %s preparing rebalance (generation %d)", group.group_id, group.generation_id)
    maybe_complete_join(group, cfg, now_ms)


def maybe_complete_join(group: Group, cfg: GroupConfig, now_ms: int) -> None:
    """End the join phase if its deadline passed or, outside the initial delay, all rejoined."""
    if not group.is_(_S.PREPARING_REBALANCE):
        return
    assert group.rebalance_deadline_ms is not None
    if group.rebalance_deadline_ms <= now_ms:
        _on_rebalance_deadline(group, cfg, now_ms)
    elif group.initial_delay_remaining_ms is None and group.all_joined():
        complete_join(group, now_ms)


def _on_rebalance_deadline(group: Group, cfg: GroupConfig, now_ms: int) -> None:
    remaining = group.initial_delay_remaining_ms
    if remaining is not None and group.new_member_added and remaining > 0:
        delay = min(cfg.initial_rebalance_delay_ms, remaining)
        group.initial_delay_remaining_ms = remaining - delay
        group.new_member_added = False
        group.rebalance_deadline_ms = now_ms + delay
        return
    complete_join(group, now_ms)


def complete_join(group: Group, now_ms: int) -> None:
    """Close the join phase: drop absent dynamic members, start the next generation, and
    answer every waiting JoinGroup (the leader's answer carries all members' metadata)."""
    for member in list(group.members.values()):
        if not member.awaiting_join and member.group_instance_id is None:
            log.info(
                "group %s: removing %s, which did not rejoin", group.group_id, member.member_id
            )
            _drop(group, member)
    joined = [m for m in group.members.values() if m.awaiting_join]
    if group.members and not joined:
        # Only static members that have not rejoined remain: wait for them or their sessions.
        group.rebalance_deadline_ms = now_ms + group.rebalance_timeout_ms()
        group.initial_delay_remaining_ms = None
        return
    if group.leader_id is not None and group.leader_id not in {m.member_id for m in joined}:
        group.leader_id = joined[0].member_id
    group.generation_id += 1
    group.rebalance_deadline_ms = None
    group.initial_delay_remaining_ms = None
    group.new_member_added = False
    if not group.members:
        group.protocol_name = None
        group.transition(_S.EMPTY)
        group.empty_since_ms = now_ms
        return
    group.protocol_name = group.select_protocol()
    group.transition(_S.COMPLETING_REBALANCE)
    everyone = group.join_members()
    for member in group.members.values():
        member.is_new = False
        member.deadline_ms = now_ms + member.session_timeout_ms
        group.pending_sync.add(member.member_id)
        member.answer_join(
            JoinResult(
                error_code=errors.NONE,
                member_id=member.member_id,
                generation_id=group.generation_id,
                protocol_type=group.protocol_type,
                protocol_name=group.protocol_name,
                leader=group.leader_id or "",
                members=everyone if group.is_leader(member.member_id) else [],
            )
        )
    group.sync_deadline_ms = now_ms + group.rebalance_timeout_ms()
    log.info(
        "group %s generation %d: %d members, leader %s, protocol %s",
        group.group_id,
        group.generation_id,
        len(group.members),
        group.leader_id,
        group.protocol_name,
    )


def _drop(group: Group, member: Member) -> None:
    """Remove a member, answering its waiters so its requests do not hang."""
    member.answer_join(JoinResult(errors.UNKNOWN_MEMBER_ID))
    member.answer_sync(SyncResult(errors.UNKNOWN_MEMBER_ID))
    group.remove(member.member_id)


def remove_member(group: Group, cfg: GroupConfig, member_id: str, now_ms: int) -> None:
    """Remove a member (left, expired or fenced) and rebalance the rest."""
    _drop(group, group.members[member_id])
    if group.is_(_S.STABLE, _S.COMPLETING_REBALANCE):
        prepare_rebalance(group, cfg, now_ms)
    else:
        maybe_complete_join(group, cfg, now_ms)


def _alive(member: Member, now_ms: int) -> bool:
    if member.is_new:
        return member.deadline_ms > now_ms
    if member.awaiting_join or member.awaiting_sync:
        return True
    return member.deadline_ms > now_ms


def expire_group(group: Group, cfg: GroupConfig, now_ms: int) -> None:
    """Apply every deadline of ``group`` that is due at ``now_ms``."""
    for member_id, deadline in list(group.pending_members.items()):
        if deadline <= now_ms:
            del group.pending_members[member_id]
            maybe_complete_join(group, cfg, now_ms)
    for member in list(group.members.values()):
        if member.member_id in group.members and not _alive(member, now_ms):
            log.info("group %s: session of %s expired", group.group_id, member.member_id)
            remove_member(group, cfg, member.member_id, now_ms)
    if group.is_(_S.PREPARING_REBALANCE):
        maybe_complete_join(group, cfg, now_ms)
    sync_deadline = group.sync_deadline_ms
    if group.is_(_S.COMPLETING_REBALANCE, _S.STABLE) and sync_deadline is not None:
        if not group.pending_sync:
            group.sync_deadline_ms = None
        elif sync_deadline <= now_ms:
            for member_id in list(group.pending_sync):
                log.info("group %s: %s never sent SyncGroup", group.group_id, member_id)
                _drop(group, group.members[member_id])
            prepare_rebalance(group, cfg, now_ms)


def next_deadline(group: Group) -> int | None:
    """The earliest time at which :func:`expire_group` could change ``group``."""
    times = list(group.pending_members.values())
    times += [
        m.deadline_ms
        for m in group.members.values()
        if m.is_new or not (m.awaiting_join or m.awaiting_sync)
    ]
    if group.is_(_S.PREPARING_REBALANCE) and group.rebalance_deadline_ms is not None:
        times.append(group.rebalance_deadline_ms)
    if group.sync_deadline_ms is not None and group.pending_sync:
        times.append(group.sync_deadline_ms)
    return min(times, default=None)
