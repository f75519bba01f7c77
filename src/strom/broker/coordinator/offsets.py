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

Offsets are never expired by age (Kafka's ``offsets.retention.minutes``); they live until the
group or topic is deleted.
"""

from __future__ import annotations

import io
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
        self._compact_min_bytes = compact_min_bytes
        self._compact_ratio = compact_ratio
        self._clock = clock
        self._groups: dict[str, dict[_Key, CommittedOffset]] = {}
        self._dirty = False
        self._file: io.FileIO | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = self._load()
        self._next_check = self._compact_min_bytes
        self._maybe_compact()
        self._file = io.FileIO(self.path, "ab")

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

    def sync(self) -> None:
        """fsync what was written since the last sync (a no-op when nothing was)."""
        if self._dirty and self._file is not None:
            os.fsync(self._file.fileno())
            self._dirty = False

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None

    # -- compaction -----------------------------------------------------------------------

    @property
    def file_size(self) -> int:
        return self._size

    def compact(self) -> None:
        """Rewrite the journal with only the live offsets (atomic: temp, fsync, rename)."""
        reopen = self._file is not None
        if self._file is not None:
            self._file.close()
        self._size = journal.rewrite(self.path, self._snapshot())
        self._dirty = False
        self._next_check = max(self._compact_min_bytes, int(self._size * self._compact_ratio))
        if reopen:
            self._file = io.FileIO(self.path, "ab")

    def _snapshot(self) -> Iterator[dict[str, Any]]:
        for group_id in sorted(self._groups):
            entries = [list(v) for _, v in sorted(self._groups[group_id].items())]
            yield {"t": "c", "g": group_id, "o": entries}

    def _live_bytes(self) -> int:
        return sum(len(journal.encode(r)) for r in self._snapshot())

    def _maybe_compact(self) -> None:
        # Checked only when the file has grown by a factor since the last check, so the cost
        # of measuring the live set is amortised over many commits.
        if self._size < self._next_check:
            return
        if self._size > self._compact_ratio * self._live_bytes():
            self.compact()
        else:
            self._next_check = max(self._compact_min_bytes, int(self._size * self._compact_ratio))

    # -- journal --------------------------------------------------------------------------

    def _load(self) -> int:
        tmp = self.path.with_name(self.path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()  # an interrupted compaction; the journal itself is intact
        if not self.path.exists():
            self.path.touch()
            journal.fsync_dir(self.path.parent)
            return 0
        data = self.path.read_bytes()
        records, good = journal.scan(data)
        for record in records:
            self._replay(record)
        if good < len(data):
            log.warning(
                "%s: dropping %d bytes of torn or corrupt tail at offset %d",
                self.path,
                len(data) - good,
                good,
            )
            with open(self.path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        return good

    def _replay(self, record: dict[str, Any]) -> None:
        kind = record.get("t")
        if kind == "c":
            self._apply_commit(record["g"], record["o"])
        elif kind == "dg":
            self._groups.pop(record["g"], None)
        elif kind == "do":
            self._apply_delete_offsets(record["g"], record["p"])
        elif kind == "dt":
            self._apply_delete_topic(record["topic"])
        else:
            log.warning("%s: skipping unknown record type %r", self.path, kind)

    def _append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: offset store is closed")
        chunk = journal.encode(record)
        view = memoryview(chunk)
        while view:  # an unbuffered write may be partial; finish the record
            view = view[self._file.write(view) :]
        self._size += len(chunk)
        if self.flush_always:
            os.fsync(self._file.fileno())
        else:
            self._dirty = True

    def _apply_commit(self, group_id: str, entries: list[list[Any]]) -> None:
        stored = self._groups.setdefault(group_id, {})
        for t, p, o, e, m, ts in entries:
            stored[(t, p)] = CommittedOffset(t, p, o, e, m, ts)

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
