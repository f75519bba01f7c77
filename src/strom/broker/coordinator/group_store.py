"""Durable group metadata: what Kafka keeps for each group in ``__consumer_offsets``.

A group is written when it settles: when a generation becomes Stable (the leader's SyncGroup),
when a static member takes over its instance's place in a Stable group, and when the group
becomes Empty. A deleted or forgotten group gets a tombstone. Transient states
(PreparingRebalance, CompletingRebalance) are never written: a restart during a rebalance
brings back the last settled generation, whose members then rejoin, as with Kafka.

On load, a group with members is Stable again with the same generation, protocol, leader,
member ids and assignments, and every member's session starts at load time; a member that does
not come back expires after its session timeout and the survivors rebalance. A group without
members is Empty, keeping its generation and protocol type.

The file is a :class:`~strom.broker.coordinator.journal.JournalFile` of JSON records::

    {"t": "gm", "v": 1, "g": <group id>, "type": <protocol type|null>, "gen": <generation>,
     "proto": <protocol|null>, "leader": <member id|null>,
     "members": [{"id": <member id>, "instance": <group.instance.id|null>, "client": <client id>,
                  "host": <client host>, "session": <ms>, "rebalance": <ms>,
                  "protocols": [[<name>, <metadata, base64>], ...],
                  "assignment": <base64>}, ...]}
    {"t": "dg", "g": <group id>}

The latest record of a group wins; ``dg`` removes it. Members keep every protocol they offered
(Kafka keeps only the chosen one) so a rejoin with unchanged metadata is still recognised.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from strom.broker.coordinator import journal
from strom.broker.coordinator.group import Group, GroupState, Member

__all__ = ["GroupStore", "group_record", "persist_key", "restore_group"]

log = logging.getLogger("strom.broker.groups")

_S = GroupState
RECORD_VERSION = 1

PersistKey = tuple[object, ...]


# -- pure functions ---------------------------------------------------------------------------


def persist_key(group: Group) -> PersistKey | None:
    """What identifies the settled state of ``group``; None while there is nothing to write.

    Two states with the same key have the same record: in a Stable group, assignments and
    metadata only change through a new generation, and member ids through a static takeover.
    An Empty group that never completed a generation has nothing worth remembering.
    """
    if group.is_(_S.STABLE):
        return (_S.STABLE, group.generation_id, group.leader_id, tuple(group.members))
    if group.is_(_S.EMPTY) and group.generation_id > 0:
        return (_S.EMPTY, group.generation_id, group.protocol_type)
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def group_record(group: Group) -> dict[str, Any]:
    """The journal record of a Stable or Empty group."""
    assert group.is_(_S.STABLE, _S.EMPTY), group.state
    return {
        "t": "gm",
        "v": RECORD_VERSION,
        "g": group.group_id,
        "type": group.protocol_type,
        "gen": group.generation_id,
        "proto": group.protocol_name if group.members else None,
        "leader": group.leader_id,
        "members": [
            {
                "id": m.member_id,
                "instance": m.group_instance_id,
                "client": m.client_id,
                "host": m.client_host,
                "session": m.session_timeout_ms,
                "rebalance": m.rebalance_timeout_ms,
                "protocols": [[name, _b64(meta)] for name, meta in m.protocols],
                "assignment": _b64(m.assignment),
            }
            for m in group.members.values()
        ],
    }


def _opt_str(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string or null, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _member(entry: dict[str, Any], protocol_type: str, now_ms: int) -> Member:
    session = _int(entry["session"])
    return Member(
        member_id=_str(entry["id"]),
        group_instance_id=_opt_str(entry["instance"]),
        client_id=_str(entry["client"]),
        client_host=_str(entry["host"]),
        session_timeout_ms=session,
        rebalance_timeout_ms=_int(entry["rebalance"]),
        protocol_type=protocol_type,
        protocols=[(_str(name), _unb64(_str(meta))) for name, meta in entry["protocols"]],
        assignment=_unb64(_str(entry["assignment"])),
        is_new=False,
        deadline_ms=now_ms + session,
    )


def restore_group(record: dict[str, Any], now_ms: int) -> Group:
    """The group a ``gm`` record describes, as of ``now_ms`` (sessions start then).

    Raises ValueError when the record is not a consistent group.
    """
    try:
        if record.get("v") != RECORD_VERSION:
            raise ValueError(f"unknown record version {record.get('v')!r}")
        group = Group(
            _str(record["g"]),
            generation_id=_int(record["gen"]),
            protocol_type=_opt_str(record["type"]),
            empty_since_ms=now_ms,
        )
        entries = record["members"]
        if not isinstance(entries, list):
            raise ValueError("members is not a list")
        for entry in entries:
            group.add(_member(entry, _str(record["type"]), now_ms))
        if len(group.members) != len(entries):
            raise ValueError("duplicate member ids")
        if group.members:
            protocol = _str(record["proto"])
            leader = _str(record["leader"])
            if leader not in group.members or len(group.static_members) != sum(
                m.group_instance_id is not None for m in group.members.values()
            ):
                raise ValueError("leader or instance ids do not match the members")
            if any(protocol not in m.protocol_names() for m in group.members.values()):
                raise ValueError(f"a member does not support protocol {protocol!r}")
            group.protocol_name, group.leader_id = protocol, leader
            # Empty -> Stable directly: a loaded group skips the rebalance it already had.
            group.state = _S.STABLE
        return group
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"malformed group record: {exc!r}") from exc


# -- the store --------------------------------------------------------------------------------


class GroupStore:
    """The latest settled record of every group, in one journal. One event loop owns it.

    Guarantees are those of :class:`~strom.broker.coordinator.journal.JournalFile`: each
    write reaches the OS before the method returns, and the disk too with ``flush_always``
    (else at :meth:`sync` and :meth:`close`); a torn tail is dropped on open; the file is
    compacted to one record per group once it has grown well past that.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        flush_always: bool = False,
        *,
        compact_min_bytes: int = 1 << 20,
        compact_ratio: float = 2.0,
    ) -> None:
        self.path = Path(path)
        self._records: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, PersistKey] = {}
        self._journal = journal.JournalFile(
            self.path,
            flush_always=flush_always,
            compact_min_bytes=compact_min_bytes,
            compact_ratio=compact_ratio,
            log=log,
        )
        for record in self._journal.open():
            kind, group_id = record.get("t"), record.get("g")
            if not isinstance(group_id, str):
                log.warning("%s: skipping a record without a group id", self.path)
            elif kind == "gm":
                self._records[group_id] = record
            elif kind == "dg":
                self._records.pop(group_id, None)
            else:
                log.warning("%s: skipping unknown record type %r", self.path, kind)
        self._journal.maybe_compact(self._snapshot)

    def load(self, now_ms: int) -> list[Group]:
        """Every stored group, restored as of ``now_ms``; unreadable records are skipped."""
        groups = []
        for group_id, record in sorted(self._records.items()):
            try:
                group = restore_group(record, now_ms)
            except ValueError as exc:
                log.warning("%s: cannot restore group %r: %s", self.path, group_id, exc)
                continue
            key = persist_key(group)
            if key is not None:
                self._keys[group_id] = key
            groups.append(group)
        return groups

    def update(self, group: Group) -> bool:
        """Write ``group`` if it is settled and differs from what was last written.
        Returns True if a record was written."""
        key = persist_key(group)
        if key is None or self._keys.get(group.group_id) == key:
            return False
        record = group_record(group)
        self._journal.append(record)
        self._records[group.group_id] = record
        self._keys[group.group_id] = key
        self._journal.maybe_compact(self._snapshot)
        return True

    def delete(self, group_id: str) -> None:
        """Forget ``group_id`` (deleted, or expired while Empty)."""
        self._keys.pop(group_id, None)
        if group_id in self._records:
            self._journal.append({"t": "dg", "g": group_id})
            del self._records[group_id]
            self._journal.maybe_compact(self._snapshot)

    def sync(self) -> None:
        self._journal.sync()

    def close(self) -> None:
        self._journal.close()

    @property
    def file_size(self) -> int:
        return self._journal.size

    def compact(self) -> None:
        self._journal.compact(self._snapshot())

    def _snapshot(self) -> Iterator[dict[str, Any]]:
        for group_id in sorted(self._records):
            yield self._records[group_id]
