"""Committed consumer-group offsets, kept in memory and persisted to one journal file.

Guarantees of :class:`OffsetStore`:

* A commit is one journal record, so a commit of several partitions survives a crash whole or
  not at all.
* Every mutation is written to the OS before the method returns (a process crash loses nothing).
  With ``flush_always`` it is also fsync'ed before returning (a machine crash loses nothing);
  otherwise :meth:`sync` (called periodically by the coordinator's runner) and :meth:`close`
  fsync it.
* Opening tolerates a torn tail: the file is truncated to its last whole record.
* The file is compacted (rewritten atomically with only the live offsets) on open, and while
  running, once it is much larger than the live set.

Transactional offsets (TxnOffsetCommit, KIP-98) are kept apart per (group, producer id) until
the transaction coordinator decides: :meth:`complete_pending` with ``commit=True`` makes them the
group's committed offsets, with ``commit=False`` drops them. Both steps are journaled like a
commit, so pending offsets survive a restart and a decision is applied exactly once; completing
a producer with nothing pending is a no-op (the coordinator re-applies decisions on recovery).
While any are pending for a partition, :meth:`pending_partitions` names it (OffsetFetch with
``require_stable`` answers UNSTABLE_OFFSET_COMMIT there).

Offsets are never expired by age (Kafka's ``offsets.retention.minutes``); they live until the
group or topic is deleted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from strom.broker.coordinator import journal
from strom.broker.coordinator.clock import Clock, wall_ms
from strom.broker.coordinator.results import CommittedOffset

__all__ = ["OffsetCommit", "OffsetStore"]

log = logging.getLogger("strom.broker.offsets")

# (topic, partition, offset, leader_epoch, metadata)
OffsetCommit = tuple[str, int, int, int, str | None]
_Key = tuple[str, int]


class OffsetStore:
    """Committed offsets per (group, topic, partition). Not thread-safe: one event loop owns it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        flush_always: bool = False,
        *,
        compact_min_bytes: int = 1 << 20,
        compact_ratio: float = 2.0,
        clock: Clock = wall_ms,
    ) -> None:
        self.path = Path(path)
        self.flush_always = flush_always
        self._clock = clock
        self._groups: dict[str, dict[_Key, CommittedOffset]] = {}
        # group -> producer id -> offsets of its open transaction
        self._pending: dict[str, dict[int, dict[_Key, CommittedOffset]]] = {}
        self._journal = journal.JournalFile(
            self.path,
            flush_always=flush_always,
            compact_min_bytes=compact_min_bytes,
            compact_ratio=compact_ratio,
            log=log,
        )
        for record in self._journal.open():
            self._replay(record)
        self._maybe_compact()

    # -- reading --------------------------------------------------------------------------

    def fetch(
        self, group_id: str, partitions: Iterable[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], CommittedOffset]:
        """Committed offsets of ``group_id`` by (topic, partition): all of them, sorted, when
        ``partitions`` is None; else exactly those asked for, in the order asked.

        A requested partition with no commit comes back with offset -1, leader epoch -1,
        metadata "" and timestamp -1, as Kafka answers OffsetFetch.
        """
        stored = self._groups.get(group_id, {})
        if partitions is None:
            return {key: stored[key] for key in sorted(stored)}
        return {
            (t, p): stored.get((t, p)) or CommittedOffset(t, p, -1, -1, "", -1)
            for t, p in partitions
        }

    def groups_with_offsets(self) -> list[str]:
        return sorted(self._groups)

    def has_offsets(self, group_id: str) -> bool:
        return group_id in self._groups

    def topics(self, group_id: str) -> set[str]:
        return {topic for topic, _ in self._groups.get(group_id, {})}

    # -- writing --------------------------------------------------------------------------

    def commit(
        self,
        group_id: str,
        offsets: Sequence[OffsetCommit],
        commit_timestamp_ms: int | None = None,
    ) -> None:
        """Store offsets for ``group_id`` atomically. A null metadata is stored as ""."""
        if not offsets:
            return
        ts = self._clock() if commit_timestamp_ms is None else commit_timestamp_ms
        entries: list[list[Any]] = [[t, p, o, e, m or "", ts] for t, p, o, e, m in offsets]
        self._append({"t": "c", "g": group_id, "o": entries})
        self._apply_commit(group_id, entries)
        self._maybe_compact()

    def delete_group(self, group_id: str) -> bool:
        """Forget every offset of ``group_id``; True if it had any."""
        if group_id not in self._groups:
            return False
        self._append({"t": "dg", "g": group_id})
        del self._groups[group_id]
        self._pending.pop(group_id, None)
        self._maybe_compact()
        return True

    def delete_offsets(self, group_id: str, partitions: Iterable[tuple[str, int]]) -> None:
        keys = [[t, p] for t, p in partitions if (t, p) in self._groups.get(group_id, {})]
        if keys:
            self._append({"t": "do", "g": group_id, "p": keys})
            self._apply_delete_offsets(group_id, keys)
            self._maybe_compact()

    def delete_topic(self, topic: str) -> None:
        """Forget the offsets of ``topic`` in every group (the topic was deleted)."""
        if any(t == topic for offsets in self._groups.values() for t, _ in offsets):
            self._append({"t": "dt", "topic": topic})
            self._apply_delete_topic(topic)
            self._maybe_compact()

    # -- transactional offsets ------------------------------------------------------------

    def commit_pending(
        self,
        group_id: str,
        producer_id: int,
        offsets: Sequence[OffsetCommit],
        commit_timestamp_ms: int | None = None,
    ) -> None:
        """Stage offsets of ``producer_id``'s open transaction (not visible to :meth:`fetch`)."""
        if not offsets:
            return
        ts = self._clock() if commit_timestamp_ms is None else commit_timestamp_ms
        entries: list[list[Any]] = [[t, p, o, e, m or "", ts] for t, p, o, e, m in offsets]
        self._append({"t": "tp", "g": group_id, "pid": producer_id, "o": entries})
        self._apply_pending(group_id, producer_id, entries)
        self._maybe_compact()

    def complete_pending(self, group_id: str, producer_id: int, *, commit: bool) -> None:
        """Publish (``commit``) or drop the offsets ``producer_id`` staged for ``group_id``."""
        if producer_id not in self._pending.get(group_id, {}):
            return
        self._append({"t": "tx", "g": group_id, "pid": producer_id, "c": commit})
        self._apply_complete(group_id, producer_id, commit)
        self._maybe_compact()

    def pending_partitions(self, group_id: str) -> set[tuple[str, int]]:
        """The partitions of ``group_id`` with transactional offsets not yet decided."""
        return {key for staged in self._pending.get(group_id, {}).values() for key in staged}

    def sync(self) -> None:
        """fsync what was written since the last sync (a no-op when nothing was)."""
        self._journal.sync()

    def close(self) -> None:
        self._journal.close()

    # -- compaction -----------------------------------------------------------------------

    @property
    def file_size(self) -> int:
        return self._journal.size

    def compact(self) -> None:
        """Rewrite the journal with only the live offsets (atomic: temp, fsync, rename)."""
        self._journal.compact(self._snapshot())

    def _snapshot(self) -> Iterator[dict[str, Any]]:
        for group_id in sorted(self._groups):
            entries = [list(v) for _, v in sorted(self._groups[group_id].items())]
            yield {"t": "c", "g": group_id, "o": entries}
        for group_id in sorted(self._pending):
            for pid, staged in sorted(self._pending[group_id].items()):
                entries = [list(v) for _, v in sorted(staged.items())]
                yield {"t": "tp", "g": group_id, "pid": pid, "o": entries}

    def _maybe_compact(self) -> None:
        self._journal.maybe_compact(self._snapshot)

    # -- journal --------------------------------------------------------------------------

    def _replay(self, record: dict[str, Any]) -> None:
        kind = record.get("t")
        if kind == "c":
            self._apply_commit(record["g"], record["o"])
        elif kind == "dg":
            self._groups.pop(record["g"], None)
            self._pending.pop(record["g"], None)
        elif kind == "tp":
            self._apply_pending(record["g"], int(record["pid"]), record["o"])
        elif kind == "tx":
            self._apply_complete(record["g"], int(record["pid"]), bool(record["c"]))
        elif kind == "do":
            self._apply_delete_offsets(record["g"], record["p"])
        elif kind == "dt":
            self._apply_delete_topic(record["topic"])
        else:
            log.warning("%s: skipping unknown record type %r", self.path, kind)

    def _append(self, record: dict[str, Any]) -> None:
        self._journal.append(record)

    def _apply_commit(self, group_id: str, entries: list[list[Any]]) -> None:
        stored = self._groups.setdefault(group_id, {})
        for t, p, o, e, m, ts in entries:
            stored[(t, p)] = CommittedOffset(t, p, o, e, m, ts)

    def _apply_pending(self, group_id: str, producer_id: int, entries: list[list[Any]]) -> None:
        staged = self._pending.setdefault(group_id, {}).setdefault(producer_id, {})
        for t, p, o, e, m, ts in entries:
            staged[(t, p)] = CommittedOffset(t, p, o, e, m, ts)

    def _apply_complete(self, group_id: str, producer_id: int, commit: bool) -> None:
        by_producer = self._pending.get(group_id, {})
        staged = by_producer.pop(producer_id, {})
        if not by_producer:
            self._pending.pop(group_id, None)
        if commit and staged:
            self._groups.setdefault(group_id, {}).update(staged)

    def _apply_delete_offsets(self, group_id: str, keys: list[list[Any]]) -> None:
        stored = self._groups.get(group_id, {})
        for t, p in keys:
            stored.pop((t, p), None)
        if not stored:
            self._groups.pop(group_id, None)

    def _apply_delete_topic(self, topic: str) -> None:
        for group_id in list(self._groups):
            stored = self._groups[group_id]
            for key in [k for k in stored if k[0] == topic]:
                del stored[key]
            if not stored:
                del self._groups[group_id]
