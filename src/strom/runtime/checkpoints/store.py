"""A checkpoint directory: checkpoints written atomically, listed, verified, retained.

Layout of ``DIR``::

    LOCK                       held (flock) by the one run writing checkpoints here
    chk-000000000007/          checkpoint 7
        state-000.bin          one operator's state (OperatorState bytes: Arrow IPC frames)
        MANIFEST.json          id, times, pipeline fingerprint, positions, state files, ...
        COMMITTED              (only with a deciding sink) its commit of 7 was made
    .tmp-...                   a write or a deletion under way (or torn by a crash)

Invariants:

- **A checkpoint exists iff its directory ``chk-<id>`` holds a valid manifest.** A write goes
  to a ``.tmp-`` directory (every file fsynced, the manifest written last, the directory
  fsynced), which is then renamed to ``chk-<id>`` and ``DIR`` fsynced: a crash at any moment
  leaves either no ``chk-<id>`` or a complete one. ``.tmp-`` leftovers and ``chk-`` directories
  without a valid manifest are ignored, with a warning, and removed by the next writer.
- **State files are verified** (size and sha256 from the manifest) before a state is used:
  damage is an error naming the file, never a silent misrestore.
- **Ids increase**: a new checkpoint's id is above every ``chk-`` name present.
- A deletion renames ``chk-<id>`` to a ``.tmp-`` name first (atomic), then removes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from strom._fs import fsync_path
from strom.engine.contracts import (
    JSON,
    Buffer,
    Guarantee,
    OperatorState,
    Position,
    StateError,
)
from strom.runtime.snapshots import ExecutorSnapshot

__all__ = ["CheckpointError", "CheckpointStore", "Manifest", "StateFile"]

log = logging.getLogger("strom.checkpoints")

FORMAT = 1
MANIFEST = "MANIFEST.json"
COMMITTED = "COMMITTED"
LOCK = "LOCK"
_TMP = ".tmp-"
_NAME = re.compile(r"chk-(\d{12})")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, read or used (damaged, of another pipeline, refused)."""


@dataclass(frozen=True)
class StateFile:
    """One stateful operator's state in a checkpoint: its file, size and sha256."""

    operator: str
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a checkpoint's ``MANIFEST.json`` says, and where it is.

    ``wall_time_ms``: when its snapshot was taken (Unix ms); ``clock_ms``: the executor's clock
    then (its states' processing-time values are of that clock). ``decider``: the deciding
    sink (see :class:`~strom.engine.contracts.CommitDecider`), None if the manifest is the
    decision. ``committed``: decided (always, without a decider; with one, once it committed
    and the marker was written: recovery asks the sink itself).
    """

    id: int
    wall_time_ms: int
    clock_ms: float
    fingerprint: Mapping[str, Any]
    positions: Mapping[str, Sequence[Position]]
    states: tuple[StateFile, ...]
    guarantee: Guarantee
    decider: str | None
    pause_us: int
    path: Path = field(compare=False)
    committed: bool = True

    @property
    def size(self) -> int:
        """Bytes of its state files."""
        return sum(s.size for s in self.states)

    def to_json(self) -> dict[str, JSON]:
        """The manifest as written (plus ``committed`` and ``size``), for ``--json`` output."""
        return {
            "format": FORMAT,
            "id": self.id,
            "wall_time_ms": self.wall_time_ms,
            "clock_ms": self.clock_ms,
            "guarantee": self.guarantee,
            "decider": self.decider,
            "pause_us": self.pause_us,
            "fingerprint": dict(self.fingerprint),
            "positions": {name: list(ps) for name, ps in self.positions.items()},
            "states": [
                {"operator": s.operator, "file": s.file, "size": s.size, "sha256": s.sha256}
                for s in self.states
            ],
            "committed": self.committed,
            "size": self.size,
        }


class CheckpointStore:
    """The checkpoints of one directory (created if missing).

    Reading (:meth:`checkpoints`, :meth:`load`) needs nothing else; writing (:meth:`write`,
    :meth:`retain`, :meth:`discard`) needs :meth:`lock` first, so two runs never write one
    directory (the lock dies with its process, ``kill -9`` included).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: BinaryIO | None = None

    # -- reading -------------------------------------------------------------------------------

    def checkpoints(self) -> list[Manifest]:
        """Every complete checkpoint, by increasing id; torn or invalid ones are skipped with a
        warning (a missing directory has none)."""
        found = []
        for entry, _ in self._entries():
            try:
                found.append(_read_manifest(entry))
            except CheckpointError as exc:
                log.warning("ignoring %s: %s", entry, exc)
        return found

    def latest(self) -> Manifest | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def get(self, checkpoint_id: int) -> Manifest:
        """Checkpoint ``checkpoint_id``'s manifest (:class:`CheckpointError` if it has none)."""
        entry = self.path / _name(checkpoint_id)
        if not entry.is_dir():
            ids = [m.id for m in self.checkpoints()]
            raise CheckpointError(f"{self.path} has no checkpoint {checkpoint_id} (it has {ids})")
        return _read_manifest(entry)

    def load(self, manifest: Manifest) -> ExecutorSnapshot:
        """The snapshot checkpoint ``manifest`` holds, every state file verified first."""
        states: dict[str, OperatorState] = {}
        for state in manifest.states:
            data = _read_verified(manifest, state)
            try:
                states[state.operator] = OperatorState.from_bytes(data)
            except StateError as exc:
                raise CheckpointError(
                    f"checkpoint {manifest.id}: {state.file} (operator {state.operator}) is "
                    f"not a readable state: {exc}"
                ) from exc
        return ExecutorSnapshot(manifest.positions, states, manifest.clock_ms)

    def highest_id(self) -> int:
        """The largest id of any ``chk-`` directory, valid or not (0 if none)."""
        return max((i for _, i in self._entries()), default=0)

    # -- writing -------------------------------------------------------------------------------

    def lock(self) -> None:
        """Create the directory, take its lock (:class:`CheckpointError` if another process
        holds it) and remove what crashed writers left (``.tmp-`` directories)."""
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = (self.path / LOCK).open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise CheckpointError(
                f"{self.path} is in use by another run (it holds {self.path / LOCK})"
            ) from None
        self._lock = handle
        for entry in self.path.iterdir():
            if entry.name.startswith(_TMP):
                log.warning("removing %s (a checkpoint write or deletion a crash cut short)", entry)
                shutil.rmtree(entry, ignore_errors=True)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def write(
        self,
        checkpoint_id: int,
        snapshot: ExecutorSnapshot,
        *,
        fingerprint: Mapping[str, Any],
        guarantee: Guarantee,
        decider: str | None,
        wall_time_ms: int,
        pause_us: int,
    ) -> Manifest:
        """Write checkpoint ``checkpoint_id`` atomically (see the module docstring); it exists
        once this returns, and not at all if this raises or the process dies first."""
        self._check_locked()
        final = self.path / _name(checkpoint_id)
        if checkpoint_id <= self.highest_id():
            raise CheckpointError(f"checkpoint ids increase: {final} or a later one exists")
        tmp = self.path / f"{_TMP}{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        files = []
        for index, (operator, state) in enumerate(snapshot.states.items()):
            name = f"state-{index:03d}.bin"
            size, digest = _write_parts_durable(tmp / name, state.to_parts())
            files.append(StateFile(operator, name, size, digest))
        manifest = Manifest(
            checkpoint_id,
            wall_time_ms,
            snapshot.clock_ms,
            fingerprint,
            snapshot.positions,
            tuple(files),
            guarantee,
            decider,
            pause_us,
            final,
            committed=decider is None,
        )
        body = {k: v for k, v in manifest.to_json().items() if k not in ("committed", "size")}
        _write_durable(tmp / MANIFEST, json.dumps(body, indent=1, allow_nan=False).encode())
        fsync_path(tmp)
        os.rename(tmp, final)
        fsync_path(self.path)
        return manifest

    def mark_committed(self, manifest: Manifest) -> Manifest:
        """Record that ``manifest``'s deciding sink committed it (informational: recovery asks
        the sink, which is the authority)."""
        self._check_locked()
        _write_durable(manifest.path / COMMITTED, b"")
        fsync_path(manifest.path)
        return _read_manifest(manifest.path)

    def retain(self, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` complete checkpoints (the oldest first), and
        ``chk-`` directories without a valid manifest older than the newest complete one.
        Returns the deleted ids."""
        self._check_locked()
        complete = self.checkpoints()
        if not complete:
            return []
        kept = {m.id for m in complete[-keep:]}
        newest = complete[-1].id
        doomed = [i for _, i in self._entries() if i not in kept and i < newest]
        for checkpoint_id in doomed:
            self._delete(checkpoint_id)
        return doomed

    def discard(self, above: int) -> list[int]:
        """Delete every checkpoint with an id above ``above`` (undecided ones, at recovery)."""
        self._check_locked()
        doomed = [i for _, i in self._entries() if i > above]
        for checkpoint_id in doomed:
            self._delete(checkpoint_id)
        return doomed

    def _delete(self, checkpoint_id: int) -> None:
        entry = self.path / _name(checkpoint_id)
        doomed = self.path / f"{_TMP}deleted-{entry.name}-{uuid.uuid4().hex[:8]}"
        os.rename(entry, doomed)  # atomic: the checkpoint is gone, whatever happens next
        fsync_path(self.path)
        shutil.rmtree(doomed, ignore_errors=True)

    def _check_locked(self) -> None:
        if self._lock is None:
            raise RuntimeError("CheckpointStore: lock() before writing")

    def _entries(self) -> Iterator[tuple[Path, int]]:
        """``(directory, id)`` of every ``chk-`` directory, by increasing id; ``.tmp-`` ones
        are skipped, with a warning."""
        if not self.path.is_dir():
            return
        found = []
        for entry in self.path.iterdir():
            if entry.name.startswith(_TMP):
                if self._lock is None:  # a writer removes them when it locks
                    log.warning("ignoring %s (an unfinished checkpoint write)", entry)
                continue
            match = _NAME.fullmatch(entry.name)
            if match and entry.is_dir():
                found.append((entry, int(match.group(1))))
        yield from sorted(found, key=lambda e: e[1])


def _name(checkpoint_id: int) -> str:
    return f"chk-{checkpoint_id:012d}"


def _read_manifest(entry: Path) -> Manifest:
    """The manifest of checkpoint directory ``entry`` (:class:`CheckpointError` if missing or
    not a valid manifest of this format)."""
    try:
        raw = json.loads((entry / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise CheckpointError("no manifest (an incomplete checkpoint)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable manifest: {exc}") from exc
    try:
        if raw["format"] != FORMAT:
            raise CheckpointError(f"manifest format {raw['format']}, this strom reads {FORMAT}")
        checkpoint_id = int(raw["id"])
        if entry.name != _name(checkpoint_id):
            raise CheckpointError(f"the manifest is of checkpoint {checkpoint_id}")
        guarantee = raw["guarantee"]
        if guarantee not in ("at-least-once", "exactly-once"):
            raise CheckpointError(f"unknown guarantee {guarantee!r}")
        decider = raw["decider"]
        return Manifest(
            id=checkpoint_id,
            wall_time_ms=int(raw["wall_time_ms"]),
            clock_ms=float(raw["clock_ms"]),
            fingerprint=dict(raw["fingerprint"]),
            positions={str(n): list(ps) for n, ps in raw["positions"].items()},
            states=tuple(
                StateFile(str(s["operator"]), str(s["file"]), int(s["size"]), str(s["sha256"]))
                for s in raw["states"]
            ),
            guarantee=guarantee,
            decider=None if decider is None else str(decider),
            pause_us=int(raw["pause_us"]),
            path=entry,
            committed=decider is None or (entry / COMMITTED).exists(),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"invalid manifest: {type(exc).__name__}: {exc}") from exc


def _read_verified(manifest: Manifest, state: StateFile) -> bytes:
    where = f"checkpoint {manifest.id}: state file {state.file} (operator {state.operator})"
    try:
        data = (manifest.path / state.file).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{where} cannot be read: {exc}") from exc
    if len(data) != state.size:
        raise CheckpointError(f"{where} is damaged: {len(data)} bytes, the manifest says "
                              f"{state.size}")  # fmt: skip
    if hashlib.sha256(data).hexdigest() != state.sha256:
        raise CheckpointError(f"{where} is damaged: its sha256 is not the manifest's")
    return data


def _write_durable(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_parts_durable(path: Path, parts: Sequence[Buffer]) -> tuple[int, str]:
    """Write ``parts`` one after the other (never joined: a large state is not copied again)
    and fsync; returns the file's size and sha256."""
    digest = hashlib.sha256()
    size = 0
    with path.open("xb") as handle:
        for part in parts:
            handle.write(part)
            digest.update(part)
            size += memoryview(part).nbytes
        handle.flush()
        os.fsync(handle.fileno())
    return size, digest.hexdigest()


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds (what manifests record)."""
    return time.time_ns() // 1_000_000
