"""The group coordinator: Kafka's classic consumer-group protocol for a single broker.

Handlers call one method per request with values decoded from the wire and turn the returned
value into a response. All methods run on the broker's single event loop; JoinGroup and
SyncGroup answers that must wait for other members are futures, so no locks are needed.

Behaviour follows Kafka's classic protocol: the five group states, KIP-394 (JoinGroup v4+ with
an empty member id gets MEMBER_ID_REQUIRED and a generated id), KIP-345 static membership
(group.instance.id; a restarted static member takes over its old id and assignment without a
rebalance when its protocols are unchanged) and KIP-134 (initial rebalance delay).

With a :class:`GroupStore`, settled group metadata (Stable generations, Empty groups,
deletions) is durable like committed offsets: after a restart a Stable group is Stable again
with the same generation, members and assignments, so connected consumers carry on (see
:mod:`strom.broker.coordinator.group_store`). Known gap: offsets are not expired by age.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence

from strom.broker.coordinator import errors
from strom.broker.coordinator.admin import GroupAdminMixin
from strom.broker.coordinator.clock import Clock, monotonic_ms, wall_ms
from strom.broker.coordinator.group import Group, GroupState, validate_member
from strom.broker.coordinator.group_store import GroupStore
from strom.broker.coordinator.join import JoinOutcome, JoinSpec, abandon_join, join
from strom.broker.coordinator.offsets import OffsetStore
from strom.broker.coordinator.rebalance import (
    GroupConfig,
    expire_group,
    maybe_complete_join,
    next_deadline,
    remove_member,
)
from strom.broker.coordinator.results import (
    JoinResult,
    LeaveResult,
    MemberLeaveResult,
    SyncResult,
)

__all__ = ["GroupCoordinator"]

log = logging.getLogger("strom.broker.groups")

_S = GroupState


class GroupCoordinator(GroupAdminMixin):
    """Consumer groups and their committed offsets (see the module docstring).

    ``clock`` (monotonic milliseconds) drives every timeout; call :meth:`start` to run the
    background task that applies them, or call :meth:`expire` yourself (tests).

    ``store`` makes group metadata durable: its groups are loaded here (sessions start now)
    and every settled change is written to it. The owner closes it (and ``offsets``).
    """

    def __init__(
        self,
        offsets: OffsetStore,
        *,
        initial_rebalance_delay_ms: int | None = None,
        config: GroupConfig | None = None,
        clock: Clock = monotonic_ms,
        wall_clock: Clock = wall_ms,
        partition_exists: Callable[[str, int], bool] | None = None,
        offsets_sync_interval_ms: int = 1_000,
        store: GroupStore | None = None,
    ) -> None:
        cfg = config or GroupConfig()
        if initial_rebalance_delay_ms is not None:
            cfg = dataclasses.replace(cfg, initial_rebalance_delay_ms=initial_rebalance_delay_ms)
        self.offsets = offsets
        self.config = cfg
        self._clock = clock
        self._wall_clock = wall_clock
        self._partition_exists = partition_exists
        self._groups: dict[str, Group] = {}
        self._store = store
        if store is not None:
            self._groups = {g.group_id: g for g in store.load(clock())}
            if self._groups:
                log.info("loaded %d consumer group(s) from %s", len(self._groups), store.path)
        self._sync_interval_ms = offsets_sync_interval_ms
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None

    # -- JoinGroup ------------------------------------------------------------------------

    async def join_group(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        require_known_member_id: bool = False,
    ) -> JoinResult:
        """Join (or rejoin) a group; returns when the join phase completes for this member.

        ``require_known_member_id`` is True for JoinGroup v4+ (KIP-394). JoinGroup v0 has no
        rebalance timeout: pass the session timeout (a value <= 0 is taken to mean that).
        """
        if rebalance_timeout_ms <= 0:
            rebalance_timeout_ms = session_timeout_ms
        spec = JoinSpec(
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type,
            list(protocols),
        )
        outcome = self._join(group_id, member_id, group_instance_id, spec, require_known_member_id)
        if isinstance(outcome, JoinResult):
            return outcome
        joined_id, waiter = outcome
        self._wake()
        try:
            return await waiter
        except asyncio.CancelledError:
            self._abandon_join(group_id, joined_id, waiter)
            raise

    def _join(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        spec: JoinSpec,
        require_known: bool,
    ) -> JoinOutcome:
        cfg = self.config
        if not group_id:
            return JoinResult(errors.INVALID_GROUP_ID, member_id)
        if not cfg.min_session_timeout_ms <= spec.session_timeout_ms <= cfg.max_session_timeout_ms:
            return JoinResult(errors.INVALID_SESSION_TIMEOUT, member_id)
        now = self._clock()
        group = self._groups.get(group_id)
        if group is None:
            if member_id:
                return JoinResult(errors.UNKNOWN_MEMBER_ID, member_id)
            group = self._groups[group_id] = Group(group_id, empty_since_ms=now)
        outcome = join(group, cfg, member_id, instance_id, spec, require_known, now)
        self._persist(group)
        return outcome

    def _abandon_join(
        self, group_id: str, member_id: str, waiter: asyncio.Future[JoinResult]
    ) -> None:
        group = self._groups.get(group_id)
        if group is not None:
            abandon_join(group, self.config, member_id, waiter, self._clock())
            self._persist(group)

    # -- SyncGroup ------------------------------------------------------------------------

    async def sync_group(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Sequence[tuple[str, bytes]],
    ) -> SyncResult:
        """Send the leader's assignments / receive this member's. Followers wait for the leader.

        ``protocol_type``/``protocol_name`` are None for SyncGroup versions before v5.
        """
        outcome = self._sync(
            group_id,
            generation_id,
            member_id,
            group_instance_id,
            protocol_type,
            protocol_name,
            assignments,
        )
        if isinstance(outcome, SyncResult):
            return outcome
        self._wake()
        return await outcome

    def _sync(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Sequence[tuple[str, bytes]],
    ) -> SyncResult | asyncio.Future[SyncResult]:
        if not group_id:
            return SyncResult(errors.INVALID_GROUP_ID)
        group = self._groups.get(group_id)
        if group is None:
            return SyncResult(errors.UNKNOWN_MEMBER_ID)
        if group.is_(_S.DEAD):
            return SyncResult(errors.COORDINATOR_NOT_AVAILABLE)
        error = validate_member(group, member_id, instance_id)
        if error is None and generation_id != group.generation_id:
            error = errors.ILLEGAL_GENERATION
        if error is None and protocol_type is not None and protocol_type != group.protocol_type:
            error = errors.INCONSISTENT_GROUP_PROTOCOL
        if error is None and protocol_name is not None and protocol_name != group.protocol_name:
            error = errors.INCONSISTENT_GROUP_PROTOCOL
        if error is None and group.is_(_S.EMPTY):
            error = errors.UNKNOWN_MEMBER_ID
        if error is None and group.is_(_S.PREPARING_REBALANCE):
            error = errors.REBALANCE_IN_PROGRESS
        if error is not None:
            return SyncResult(error)
        now = self._clock()
        member = group.members[member_id]
        group.pending_sync.discard(member_id)
        if group.is_(_S.STABLE):
            member.deadline_ms = now + member.session_timeout_ms
            return SyncResult(
                errors.NONE, group.protocol_type, group.protocol_name, member.assignment
            )
        member.answer_sync(SyncResult(errors.REBALANCE_IN_PROGRESS))  # superseded retry
        waiter: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        member.sync_waiter = waiter
        if group.is_leader(member_id):
            given = dict(assignments)
            for m in group.members.values():
                m.assignment = given.get(m.member_id, b"")
            group.transition(_S.STABLE)
            for m in group.members.values():
                if m.awaiting_sync:
                    m.deadline_ms = now + m.session_timeout_ms
                    m.answer_sync(
                        SyncResult(
                            errors.NONE, group.protocol_type, group.protocol_name, m.assignment
                        )
                    )
            log.info("group %s generation %d is Stable", group.group_id, group.generation_id)
            self._persist(group)
        return waiter

    # -- Heartbeat / LeaveGroup -----------------------------------------------------------

    def heartbeat(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None = None,
    ) -> int:
        """Keep a member's session alive. REBALANCE_IN_PROGRESS tells it to rejoin."""
        if not group_id:
            return errors.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            return errors.UNKNOWN_MEMBER_ID
        if group.is_(_S.DEAD):
            return errors.COORDINATOR_NOT_AVAILABLE
        error = validate_member(group, member_id, group_instance_id)
        if error is not None:
            return error
        if generation_id != group.generation_id:
            return errors.ILLEGAL_GENERATION
        if group.is_(_S.EMPTY):
            return errors.UNKNOWN_MEMBER_ID
        member = group.members[member_id]
        member.deadline_ms = self._clock() + member.session_timeout_ms
        if group.is_(_S.PREPARING_REBALANCE):
            return errors.REBALANCE_IN_PROGRESS
        return errors.NONE

    def leave_group(self, group_id: str, members: Sequence[tuple[str, str | None]]) -> LeaveResult:
        """Remove members, given as (member_id, group_instance_id). An empty member id with an
        instance id removes that static member (the admin client's removeMembers)."""
        if not group_id:
            return LeaveResult(errors.INVALID_GROUP_ID, [])
        group = self._groups.get(group_id)
        if group is None:
            return LeaveResult(
                errors.NONE,
                [MemberLeaveResult(m, i, errors.UNKNOWN_MEMBER_ID) for m, i in members],
            )
        if group.is_(_S.DEAD):
            return LeaveResult(errors.COORDINATOR_NOT_AVAILABLE, [])
        now = self._clock()
        results = []
        for member_id, instance_id in members:
            error: int | None = errors.NONE
            if not member_id:
                current = group.static_members.get(instance_id) if instance_id else None
                if current is None:
                    error = errors.UNKNOWN_MEMBER_ID
                else:
                    remove_member(group, self.config, current, now)
            elif member_id in group.pending_members:
                del group.pending_members[member_id]
                maybe_complete_join(group, self.config, now)
            else:
                error = validate_member(group, member_id, instance_id)
                if error is None:
                    remove_member(group, self.config, member_id, now)
            results.append(MemberLeaveResult(member_id, instance_id, error or errors.NONE))
        self._persist(group)
        self._wake()
        return LeaveResult(errors.NONE, results)

    # -- time -----------------------------------------------------------------------------

    def expire(self, now_ms: int | None = None) -> None:
        """Apply every timeout due at ``now_ms`` (default: the clock): expired sessions,
        rebalance and sync deadlines; forget long-empty groups that have no offsets."""
        now = self._clock() if now_ms is None else now_ms
        for group_id, group in list(self._groups.items()):
            expire_group(group, self.config, now)
            if (
                group.is_(_S.EMPTY)
                and not group.pending_members
                and now - group.empty_since_ms >= self.config.empty_group_retention_ms
                and not self.offsets.has_offsets(group_id)
            ):
                del self._groups[group_id]
                self._unpersist(group_id)
            else:
                self._persist(group)

    def next_deadline_ms(self) -> int | None:
        """The earliest time :meth:`expire` has something to do, if any."""
        times = [t for g in self._groups.values() if (t := next_deadline(g)) is not None]
        return min(times, default=None)

    def start(self) -> None:
        """Start the background task applying timeouts and syncing offsets periodically.
        Call from a running event loop; idempotent."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="strom-group-coordinator"
            )

    async def stop(self) -> None:
        """Stop the background task and fsync committed offsets and group metadata."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sync_files()

    def _sync_files(self) -> None:
        self.offsets.sync()
        if self._store is not None:
            self._store.sync()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        last_sync = self._clock()
        while True:
            now = self._clock()
            try:
                self.expire(now)
                if now - last_sync >= self._sync_interval_ms:
                    self._sync_files()
                    last_sync = now
            except Exception:  # one bad group must not stop every group's timeouts
                log.exception("group coordinator timer failed")
            deadline = self.next_deadline_ms()
            wait_ms = self._sync_interval_ms
            if deadline is not None:
                wait_ms = min(wait_ms, max(deadline - self._clock(), 0))
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races
            # with the event being set, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_ms / 1000):
                    await self._wakeup.wait()

    # -- introspection --------------------------------------------------------------------

    def get_group(self, group_id: str) -> Group | None:
        """The live state of a group (read-only use: the CLI and tests)."""
        return self._groups.get(group_id)
