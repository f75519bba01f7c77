"""The state of one classic-protocol consumer group, and the pure rules about it.

A group moves through Kafka's five states::

    Empty ──join──► PreparingRebalance ──all joined / timeout──► CompletingRebalance
      ▲                 ▲        │                                   │ leader's SyncGroup
      │                 │        └──no members left──► Empty         ▼
      │                 └──────── join / leave / expiry ─────────── Stable
    (any) ──delete──► Dead

Invariants kept by :class:`Group` (the coordinator only mutates it through these methods):

* ``members`` is ordered by join time; ``leader_id`` is a member id or None when there are none.
* ``static_members`` maps each group.instance.id to exactly one current member, and every
  member with an instance id appears in it.
* ``protocol_type`` is fixed by the first member of an empty group and every member shares it.
* ``generation_id`` only grows.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from strom.broker.coordinator import errors
from strom.broker.coordinator.results import JoinMember, JoinResult, SyncResult

__all__ = [
    "Group",
    "GroupState",
    "Member",
    "select_protocol",
    "validate_member",
]


class GroupState(enum.Enum):
    """A group's state; ``value`` is the name Kafka prints (DescribeGroups, ListGroups)."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    ),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.DEAD: frozenset(GroupState),
}


@dataclass(eq=False)
class Member:
    """One member. ``join_waiter``/``sync_waiter`` are the pending JoinGroup/SyncGroup answers."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    # A member that has not completed its first join is "new": it expires after the new-member
    # join timeout instead of its session timeout, since it cannot heartbeat yet.
    is_new: bool = True
    deadline_ms: int = 0
    join_waiter: asyncio.Future[JoinResult] | None = None
    sync_waiter: asyncio.Future[SyncResult] | None = None

    @property
    def awaiting_join(self) -> bool:
        return self.join_waiter is not None and not self.join_waiter.done()

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_waiter is not None and not self.sync_waiter.done()

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        raise KeyError(protocol)

    def matches(self, protocols: Sequence[tuple[str, bytes]]) -> bool:
        """True when a rejoin carries exactly the protocols (and metadata) already known."""
        return list(protocols) == self.protocols

    def answer_join(self, result: JoinResult) -> None:
        if self.join_waiter is not None and not self.join_waiter.done():
            self.join_waiter.set_result(result)
        self.join_waiter = None

    def answer_sync(self, result: SyncResult) -> None:
        if self.sync_waiter is not None and not self.sync_waiter.done():
            self.sync_waiter.set_result(result)
        self.sync_waiter = None


def select_protocol(preferences: Iterable[Sequence[str]]) -> str:
    """Pick the protocol for a generation from each member's ordered preference list.

    Candidates are the protocols every member supports. Each member votes for its most preferred
    candidate; the most votes wins, and a tie goes to the candidate named earliest by the first
    member (the one that joined first). Raises ValueError if no protocol is common to all.
    """
    prefs = [list(p) for p in preferences]
    if not prefs:
        raise ValueError("no members")
    common = set(prefs[0]).intersection(*prefs[1:])
    if not common:
        raise ValueError("no protocol is supported by every member")
    votes = Counter(next(name for name in p if name in common) for p in prefs)
    order = [name for name in prefs[0] if name in common]
    return max(order, key=lambda name: (votes[name], -order.index(name)))


@dataclass(eq=False)
class Group:
    """Mutable state of one group. See the module docstring for the invariants."""

    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    # Member ids handed out with MEMBER_ID_REQUIRED, not yet joined -> expiry deadline.
    pending_members: dict[str, int] = field(default_factory=dict)
    # Members of the current generation whose SyncGroup has not arrived yet.
    pending_sync: set[str] = field(default_factory=set)
    # PreparingRebalance: when the join phase is forced to complete.
    rebalance_deadline_ms: int | None = None
    # Initial delay (KIP-134): budget left to extend by, and whether a member joined meanwhile.
    initial_delay_remaining_ms: int | None = None
    new_member_added: bool = False
    # CompletingRebalance/Stable: when members still in ``pending_sync`` are removed.
    sync_deadline_ms: int | None = None
    # When the group last became Empty; empty groups without offsets are forgotten later.
    empty_since_ms: int = 0

    def transition(self, new_state: GroupState) -> None:
        if self.state not in _VALID_PREVIOUS[new_state]:
            raise AssertionError(
                f"group {self.group_id!r}: illegal transition {self.state.value} -> "
                f"{new_state.value}"
            )
        self.state = new_state

    def is_(self, *states: GroupState) -> bool:
        return self.state in states

    def add(self, member: Member) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader_id is None:
            self.leader_id = member.member_id

    def remove(self, member_id: str) -> Member:
        member = self.members.pop(member_id)
        if member.group_instance_id is not None:
            self.static_members.pop(member.group_instance_id, None)
        self.pending_sync.discard(member_id)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return member

    def replace_static(self, instance_id: str, new_member_id: str) -> tuple[Member, Member]:
        """Give the member behind ``instance_id`` a new member id, keeping its place and
        assignment. Returns (old, new); the caller answers the old member's waiters."""
        old_id = self.static_members[instance_id]
        old = self.members[old_id]
        new = Member(
            member_id=new_member_id,
            group_instance_id=instance_id,
            client_id=old.client_id,
            client_host=old.client_host,
            session_timeout_ms=old.session_timeout_ms,
            rebalance_timeout_ms=old.rebalance_timeout_ms,
            protocol_type=old.protocol_type,
            protocols=old.protocols,
            assignment=old.assignment,
            is_new=False,
            deadline_ms=old.deadline_ms,
        )
        self.members = {
            (new_member_id if mid == old_id else mid): (new if mid == old_id else m)
            for mid, m in self.members.items()
        }
        self.static_members[instance_id] = new_member_id
        if self.leader_id == old_id:
            self.leader_id = new_member_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_member_id)
        return old, new

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def all_joined(self) -> bool:
        """Every known member is waiting in JoinGroup and no MEMBER_ID_REQUIRED id is pending."""
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def supports(self, protocol_type: str, protocol_names: Sequence[str]) -> bool:
        """Could a member with these protocols join? Empty groups take any non-empty offer;
        otherwise the type must match and one protocol must be supported by all members."""
        if not protocol_type or not protocol_names:
            return False
        if not self.members:
            return True
        if protocol_type != self.protocol_type:
            return False
        supported = [set(m.protocol_names()) for m in self.members.values()]
        return any(all(name in s for s in supported) for name in protocol_names)

    def select_protocol(self) -> str:
        return select_protocol(m.protocol_names() for m in self.members.values())

    def join_members(self) -> list[JoinMember]:
        """The member list a leader receives: every member's metadata for the chosen protocol."""
        assert self.protocol_name is not None
        return [
            JoinMember(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
            for m in self.members.values()
        ]


def validate_member(group: Group, member_id: str, group_instance_id: str | None) -> int | None:
    """Is (member_id, group_instance_id) a current member? Returns an error code or None.

    With an instance id, that instance must exist (else UNKNOWN_MEMBER_ID) and be mapped to
    ``member_id`` (else FENCED_INSTANCE_ID: a newer process with the same instance id took over).
    """
    if group_instance_id is not None:
        current = group.static_members.get(group_instance_id)
        if current is None:
            return errors.UNKNOWN_MEMBER_ID
        if current != member_id:
            return errors.FENCED_INSTANCE_ID
        return None
    if member_id not in group.members:
        return errors.UNKNOWN_MEMBER_ID
    return None
