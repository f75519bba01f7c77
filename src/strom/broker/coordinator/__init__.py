"""Consumer groups, committed offsets and producer state for the strom broker.

* :class:`GroupCoordinator` — Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
  LeaveGroup, ListGroups, DescribeGroups, DeleteGroups, OffsetCommit validation, OffsetDelete).
* :class:`OffsetStore` — durable committed offsets (a checksummed, compacted journal).
* :class:`GroupStore` — durable group metadata (generations, members, assignments), the same way.
* :class:`ProducerIdManager` — InitProducerId; :class:`SequenceTracker` — idempotent dedup.

Error codes are plain ints, named in :mod:`strom.broker.coordinator.errors`.
"""

from strom.broker.coordinator import errors
from strom.broker.coordinator.clock import Clock, ManualClock, monotonic_ms, wall_ms
from strom.broker.coordinator.group import GroupState, select_protocol
from strom.broker.coordinator.group_store import GroupStore
from strom.broker.coordinator.groups import GroupCoordinator
from strom.broker.coordinator.offsets import OffsetCommit, OffsetStore
from strom.broker.coordinator.producers import InitProducerIdResult, ProducerIdManager
from strom.broker.coordinator.rebalance import GroupConfig
from strom.broker.coordinator.results import (
    CommittedOffset,
    GroupDescription,
    GroupListing,
    JoinMember,
    JoinResult,
    LeaveResult,
    MemberDescription,
    MemberLeaveResult,
    PartitionError,
    SyncResult,
)
from strom.broker.coordinator.sequences import (
    BatchLike,
    SequenceTracker,
    SequenceVerdict,
    last_sequence,
)

__all__ = [
    "BatchLike",
    "Clock",
    "CommittedOffset",
    "GroupConfig",
    "GroupCoordinator",
    "GroupDescription",
    "GroupListing",
    "GroupState",
    "GroupStore",
    "InitProducerIdResult",
    "JoinMember",
    "JoinResult",
    "LeaveResult",
    "ManualClock",
    "MemberDescription",
    "MemberLeaveResult",
    "OffsetCommit",
    "OffsetStore",
    "PartitionError",
    "ProducerIdManager",
    "SequenceTracker",
    "SequenceVerdict",
    "SyncResult",
    "errors",
    "last_sequence",
    "monotonic_ms",
    "select_protocol",
    "wall_ms",
]
