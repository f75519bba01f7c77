"""Offset commits, admin requests and persistence of the group coordinator (a mixin).

Offset commit validation follows Kafka's classic coordinator:

* Generation -1 with no member id and no instance id, for a group that is Empty or unknown,
  is a "simple consumer" commit (manual assignment: kcat, ``assign()``) and is accepted.
* Any other commit must come from a current member (static members: the current id of their
  instance, else FENCED_INSTANCE_ID) with the current generation (else ILLEGAL_GENERATION).
  Unknown groups reject generations >= 0 with ILLEGAL_GENERATION.
* A non-empty group rejects anonymous commits with UNKNOWN_MEMBER_ID.
* Commits are accepted while Stable or PreparingRebalance (the member learns of the rebalance
  from its heartbeat) and refused with REBALANCE_IN_PROGRESS while CompletingRebalance.

A group "exists" for listing, describing and deleting if the coordinator has it in memory or it
has committed offsets (a simple-consumer group is only offsets: state Empty, no protocol type).
Groups deleted here, or forgotten after a long time Empty, get a tombstone in the group store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from strom.broker.coordinator import errors
from strom.broker.coordinator.clock import Clock
from strom.broker.coordinator.consumer_protocol import subscribed_topics
from strom.broker.coordinator.group import Group, GroupState, validate_member
from strom.broker.coordinator.group_store import GroupStore
from strom.broker.coordinator.offsets import OffsetCommit, OffsetStore
from strom.broker.coordinator.rebalance import GroupConfig
from strom.broker.coordinator.results import (
    CommittedOffset,
    GroupDescription,
    GroupListing,
    MemberDescription,
    PartitionError,
)

__all__ = ["GroupAdminMixin"]

log = logging.getLogger("strom.broker.groups")

_S = GroupState


class GroupAdminMixin:
    """Methods over the coordinator's groups and offset store; see the module docstring."""

    offsets: OffsetStore
    config: GroupConfig
    _groups: dict[str, Group]
    _store: GroupStore | None
    _clock: Clock
    _wall_clock: Clock
    _partition_exists: Callable[[str, int], bool] | None

    # -- offsets --------------------------------------------------------------------------

    def validate_commit(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
    ) -> int:
        """May this member commit offsets for ``group_id`` now? Returns an error code (NONE).

        A successful check from a member also counts as a heartbeat, as in Kafka.
        """
        group = self._groups.get(group_id)
        if group is None:
            if generation_id >= 0:
                return errors.ILLEGAL_GENERATION
            group = Group(group_id)
        if group.is_(_S.DEAD):
            return errors.COORDINATOR_NOT_AVAILABLE
        if generation_id >= 0 or member_id or group_instance_id is not None:
            error = validate_member(group, member_id, group_instance_id)
            if error is not None:
                return error
            if generation_id != group.generation_id:
                return errors.ILLEGAL_GENERATION
        elif not group.is_(_S.EMPTY):
            return errors.UNKNOWN_MEMBER_ID
        if group.is_(_S.COMPLETING_REBALANCE):
            return errors.REBALANCE_IN_PROGRESS
        member = group.members.get(member_id)
        if member is not None:
            member.deadline_ms = self._clock() + member.session_timeout_ms
        return errors.NONE

    def commit_offsets(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: Sequence[OffsetCommit],
    ) -> list[PartitionError]:
        """Validate and durably store a commit; one error code per requested partition.

        ``offsets`` holds (topic, partition, offset, leader_epoch, metadata) tuples.
        """
        error = self.validate_commit(group_id, generation_id, member_id, group_instance_id)
        if error != errors.NONE:
            return [PartitionError(t, p, error) for t, p, *_ in offsets]
        results, accepted = self._check_offsets(offsets)
        self.offsets.commit(group_id, accepted, self._wall_clock())
        return results

    def commit_txn_offsets(
        self,
        group_id: str,
        producer_id: int,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: Sequence[OffsetCommit],
    ) -> list[PartitionError]:
        """TxnOffsetCommit: stage offsets in ``producer_id``'s transaction (the transaction
        coordinator has checked the producer). They become committed offsets only if it commits.

        The member checks of KIP-447 apply when the request names a generation or a member
        (TxnOffsetCommit v3+ from a consumer's group metadata); without them, as from v0-2
        clients, only a dead group is refused.
        """
        if generation_id >= 0 or member_id or group_instance_id is not None:
            error = self.validate_commit(group_id, generation_id, member_id, group_instance_id)
        else:
            group = self._groups.get(group_id)
            dead = group is not None and group.is_(_S.DEAD)
            error = errors.COORDINATOR_NOT_AVAILABLE if dead else errors.NONE
        if error != errors.NONE:
            return [PartitionError(t, p, error) for t, p, *_ in offsets]
        results, accepted = self._check_offsets(offsets)
        self.offsets.commit_pending(group_id, producer_id, accepted, self._wall_clock())
        return results

    def _check_offsets(
        self, offsets: Sequence[OffsetCommit]
    ) -> tuple[list[PartitionError], list[OffsetCommit]]:
        """One result per entry, and the entries that may be stored."""
        results: list[PartitionError] = []
        accepted: list[OffsetCommit] = []
        for entry in offsets:
            topic, partition, _, _, metadata = entry
            code = errors.NONE
            if metadata is not None and len(metadata) > self.config.offset_metadata_max_bytes:
                code = errors.OFFSET_METADATA_TOO_LARGE
            elif self._partition_exists is not None and not self._partition_exists(
                topic, partition
            ):
                code = errors.UNKNOWN_TOPIC_OR_PARTITION
            else:
                accepted.append(entry)
            results.append(PartitionError(topic, partition, code))
        return results, accepted

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], CommittedOffset]:
        """Committed offsets (offset -1 where none); ``None`` asks for all of the group's."""
        return self.offsets.fetch(group_id, partitions)

    def delete_offsets(
        self, group_id: str, partitions: Sequence[tuple[str, int]]
    ) -> tuple[int, list[PartitionError]]:
        """OffsetDelete: drop committed offsets unless an active group consumes the topic."""
        group = self._groups.get(group_id)
        live = group is not None and not group.is_(_S.DEAD)
        if not live and not self.offsets.has_offsets(group_id):
            return errors.GROUP_ID_NOT_FOUND, []
        subscribed: set[str] | None = set()
        if group is not None and live and not group.is_(_S.EMPTY):
            if group.protocol_type != "consumer":
                return errors.NON_EMPTY_GROUP, []
            subscribed = self._subscribed_topics(group)
        results: list[PartitionError] = []
        eligible: list[tuple[str, int]] = []
        for topic, partition in partitions:
            if subscribed is None or topic in subscribed:
                code = errors.GROUP_SUBSCRIBED_TO_TOPIC
            elif self._partition_exists is not None and not self._partition_exists(
                topic, partition
            ):
                code = errors.UNKNOWN_TOPIC_OR_PARTITION
            else:
                code = errors.NONE
                eligible.append((topic, partition))
            results.append(PartitionError(topic, partition, code))
        self.offsets.delete_offsets(group_id, eligible)
        return errors.NONE, results

    @staticmethod
    def _subscribed_topics(group: Group) -> set[str] | None:
        """Union of the members' subscriptions; None (= everything) when not readable."""
        if group.protocol_name is None:
            return None
        topics: set[str] = set()
        for member in group.members.values():
            subscribed = subscribed_topics(member.metadata(group.protocol_name))
            if subscribed is None:
                return None
            topics |= subscribed
        return topics

    # -- persistence ----------------------------------------------------------------------

    def _persist(self, group: Group) -> None:
        """Write ``group`` to the store if it settled into a new state (see group_store).

        A failed write is logged, not raised: the answers already given stay valid in memory,
        and the next settled change of the group is written whole."""
        if self._store is None:
            return
        try:
            self._store.update(group)
        except OSError:
            log.exception("could not persist group %s", group.group_id)

    def _unpersist(self, group_id: str) -> None:
        """Record that ``group_id`` is gone, so a restart does not bring it back."""
        if self._store is not None:
            self._store.delete(group_id)

    # -- admin ----------------------------------------------------------------------------

    def list_groups(self, states_filter: Iterable[str] | None = None) -> list[GroupListing]:
        """All groups, sorted by id; ``states_filter`` (case-insensitive names) narrows it."""
        found: dict[str, GroupListing] = {}
        for group_id, group in self._groups.items():
            if not group.is_(_S.DEAD):
                found[group_id] = GroupListing(
                    group_id, group.protocol_type or "", group.state.value
                )
        for group_id in self.offsets.groups_with_offsets():
            found.setdefault(group_id, GroupListing(group_id, "", _S.EMPTY.value))
        wanted = {s.casefold() for s in states_filter} if states_filter else None
        return [
            found[g] for g in sorted(found) if wanted is None or found[g].state.casefold() in wanted
        ]

    def describe_group(self, group_id: str) -> GroupDescription:
        """A group's state and members. Metadata, assignments and the protocol name are only
        reported while Stable (as Kafka does): in other states they are not settled."""
        group = self._groups.get(group_id)
        if group is None or group.is_(_S.DEAD):
            if self.offsets.has_offsets(group_id):
                return GroupDescription(group_id, _S.EMPTY.value, "", "", [])
            return GroupDescription(group_id, _S.DEAD.value, "", "", [], exists=False)
        stable = group.is_(_S.STABLE) and group.protocol_name is not None
        members = [
            MemberDescription(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.metadata(group.protocol_name) if stable and group.protocol_name else b"",
                m.assignment if stable else b"",
            )
            for m in group.members.values()
        ]
        return GroupDescription(
            group_id,
            group.state.value,
            group.protocol_type or "",
            (group.protocol_name or "") if stable else "",
            members,
            generation_id=group.generation_id,
            leader=group.leader_id or "",
        )

    def delete_groups(self, group_ids: Iterable[str]) -> dict[str, int]:
        """Delete Empty groups and their offsets; NON_EMPTY_GROUP for groups with members,
        GROUP_ID_NOT_FOUND for groups that do not exist."""
        results: dict[str, int] = {}
        for group_id in group_ids:
            group = self._groups.get(group_id)
            if group is not None and not group.is_(_S.DEAD):
                if not group.is_(_S.EMPTY):
                    results[group_id] = errors.NON_EMPTY_GROUP
                    continue
                group.transition(_S.DEAD)
                del self._groups[group_id]
                self._unpersist(group_id)
                self.offsets.delete_group(group_id)
                results[group_id] = errors.NONE
            elif self.offsets.delete_group(group_id):
                results[group_id] = errors.NONE
            else:
                results[group_id] = errors.GROUP_ID_NOT_FOUND
        return results
