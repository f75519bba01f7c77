"""Consumer groups, committed offsets and producer state for the strom broker.

* :class:`GroupCoordinator` — Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
  LeaveGroup, ListGroups, DescribeGroups, DeleteGroups, OffsetCommit validation, OffsetDelete).
* :class:`OffsetStore` — durable committed offsets (a checksummed, compacted journal).
* :class:`GroupStore` — durable group metadata (generations, members, assignments), the same way.
* :class:`ProducerIdManager` — producer id blocks; :class:`SequenceTracker` — idempotent dedup.
* :class:`TransactionCoordinator` — transactional ids, their epochs and transactions, persisted
  in a :class:`TransactionLog`.

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
from strom.broker.coordinator.transactions import (
    MarkerWriter,
    OffsetCompleter,
    TransactionCoordinator,
    TxnDescription,
    TxnListing,
)
from strom.broker.coordinator.txn_log import TransactionLog, TxnMetadata, TxnState

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
    "MarkerWriter",
    "MemberDescription",
    "MemberLeaveResult",
    "OffsetCommit",
    "OffsetCompleter",
    "OffsetStore",
    "PartitionError",
    "ProducerIdManager",
    "SequenceTracker",
    "SequenceVerdict",
    "SyncResult",
    "TransactionCoordinator",
    "TransactionLog",
    "TxnDescription",
    "TxnListing",
    "TxnMetadata",
    "TxnState",
    "errors",
    "last_sequence",
    "monotonic_ms",
    "select_protocol",
    "wall_ms",
]
