"""Plain, immutable values the coordinator hands back to the request handlers.

Handlers map these field for field onto Kafka responses; none of them holds a reference into the
coordinator's mutable state, so a result stays valid after the group moves on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from strom.broker.coordinator import errors

__all__ = [
    "CommittedOffset",
    "GroupDescription",
    "GroupListing",
    "JoinMember",
    "JoinResult",
    "LeaveResult",
    "MemberDescription",
    "MemberLeaveResult",
    "PartitionError",
    "SyncResult",
]


class JoinMember(NamedTuple):
    """One member as the leader sees it in its JoinGroup response."""

    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    """A JoinGroup answer. ``members`` is non-empty only in the leader's answer.

    On an error, ``member_id`` is the id the client must use next: the generated id with
    MEMBER_ID_REQUIRED, the id it sent for most other errors, and ``""`` when it must start over.
    """

    error_code: int
    member_id: str = ""
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: list[JoinMember] = field(default_factory=list)
    skip_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncResult:
    """A SyncGroup answer: this member's assignment for the current generation."""

    error_code: int
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


class MemberLeaveResult(NamedTuple):
    member_id: str
    group_instance_id: str | None
    error_code: int


class LeaveResult(NamedTuple):
    """A LeaveGroup answer: a top-level error and one entry per member asked to leave.

    LeaveGroup v0-v2 carry a single member and no per-member list; for those the handler
    should answer with that member's ``error_code`` when the top-level code is NONE.
    """

    error_code: int
    members: list[MemberLeaveResult]


class GroupListing(NamedTuple):
    group_id: str
    protocol_type: str
    state: str


class MemberDescription(NamedTuple):
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    member_metadata: bytes
    member_assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A DescribeGroups entry. ``state`` is spelled as Kafka prints it ("Stable", "Empty", ...).

    A group the coordinator does not know is described, as Kafka does, with state "Dead" and
    error NONE; ``exists`` is False then, so DescribeGroups v6+ can answer GROUP_ID_NOT_FOUND.
    """

    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: list[MemberDescription]
    error_code: int = errors.NONE
    exists: bool = True
    generation_id: int = -1
    leader: str = ""


class CommittedOffset(NamedTuple):
    """A committed position; ``offset == -1`` means nothing is committed for the partition."""

    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int


class PartitionError(NamedTuple):
    topic: str
    partition: int
    error_code: int
