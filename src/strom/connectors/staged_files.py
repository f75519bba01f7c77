"""The exactly-once files of a :class:`~strom.connectors.files.FileSink`: staged, then renamed.

One writer (a sink, or one worker's share of it) owns, in its directory, files of four kinds:

- ``<writer>-<n>.<fmt>``: published, ``n`` 8 digits from 0 (the output);
- ``.<writer>-<n>.<fmt>.<token>.pending``: written by the process holding ``token``;
- ``.<writer>.<token>.<c>.precommit``: checkpoint ``c`` covers that process's pending files
  ``first..last`` (JSON), written whole (temporary file, fsync, rename);
- ``.<writer>.owner``: the token of the process that owns the writer now (fencing).

Invariant: a pending file is renamed to its final name only when a pre-commit marker covers it
and the checkpoint is committed (or recovered); the marker goes only after its files are all
renamed. So every step is idempotent and a crash anywhere leaves a state the next
:meth:`StagedFiles.recover` completes: the published files are exactly those of the checkpoints
committed, numbered without a gap.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from strom._fs import fsync_path
from strom.engine.contracts import FencedError

__all__ = ["StagedFiles"]


@dataclass(frozen=True)
class _Marker:
    path: Path
    token: str
    checkpoint: int
    first: int
    last: int


class StagedFiles:
    """A writer's staged files, owned by this process (``token``) since :meth:`recover`."""

    def __init__(self, directory: Path, writer: str, fmt: str, token: str, next_n: int) -> None:
        self.directory = directory
        self.writer = writer
        self.fmt = fmt
        self.token = token
        self._next = next_n
        self._published = next_n - 1  # the last published n (-1: none)
        self._unsynced: list[Path] = []
        self._first = next_n  # the first n not covered by a pre-commit of this process
        w = re.escape(writer)
        self._final_re = re.compile(rf"{w}-(\d{{8,}})\.{fmt}")
        self._pending_re = re.compile(rf"\.{w}-(\d{{8,}})\.{fmt}\.([0-9a-f]+)\.pending")
        self._marker_re = re.compile(rf"\.{w}\.([0-9a-f]+)\.(\d+)\.precommit")
        self._tmp_re = re.compile(rf"\.{w}\..*\.tmp")

    @property
    def uncovered(self) -> int:
        """How many files were written since the last pre-commit (or abort)."""
        return self._next - self._first

    # -- the two phases --------------------------------------------------------------------

    @classmethod
    def recover(
        cls, directory: Path, writer: str, fmt: str, checkpoint_id: int | None
    ) -> StagedFiles:
        """Publish the previous owner's files of pre-commits ``<= checkpoint_id``, delete every
        other staged file of ``writer``, and own it under a new token."""
        staged = cls(directory, writer, fmt, "", 0)
        owner = staged._owner()
        markers = staged._markers()
        if checkpoint_id is not None and owner is not None:
            for m in markers:
                if m.token == owner and m.checkpoint <= checkpoint_id:
                    staged._publish(m)
        fsync_path(directory)
        for name in staged._names():
            if staged._pending_re.fullmatch(name) or staged._tmp_re.fullmatch(name):
                (directory / name).unlink(missing_ok=True)
        for m in markers:
            m.path.unlink(missing_ok=True)
        token = secrets.token_hex(8)
        _write_whole(staged._owner_path(), token.encode())
        published = [
            int(g.group(1)) for n in staged._names() if (g := staged._final_re.fullmatch(n))
        ]
        return cls(directory, writer, fmt, token, max(published, default=-1) + 1)

    def write(self, batch: pl.DataFrame) -> None:
        path = self._pending_path(self._next)
        if self.fmt == "parquet":
            batch.write_parquet(path)
        else:
            batch.write_ndjson(path)
        self._unsynced.append(path)
        self._next += 1

    def pre_commit(self, checkpoint_id: int) -> None:
        """fsync the files written since the last pre-commit; record them as the checkpoint's."""
        self._fence()
        for path in self._unsynced:
            fsync_path(path)
        self._unsynced.clear()
        if self._first < self._next:
            name = f".{self.writer}.{self.token}.{checkpoint_id}.precommit"
            body = json.dumps({"first": self._first, "last": self._next - 1}).encode()
            _write_whole(self.directory / name, body)
            self._first = self._next
        fsync_path(self.directory)

    def commit(self, checkpoint_id: int) -> None:
        """Rename the files of this process's pre-commits ``<= checkpoint_id`` (idempotent)."""
        self._fence()
        done = [
            m for m in self._markers() if m.token == self.token and m.checkpoint <= checkpoint_id
        ]
        for m in done:
            self._publish(m)
            self._published = max(self._published, m.last)
        if done:
            fsync_path(self.directory)
        for m in done:
            m.path.unlink(missing_ok=True)

    def abort(self, checkpoint_id: int) -> None:
        """Delete the files not covered by a pre-commit before ``checkpoint_id``; number on from
        the last one kept, so that a replay names its files as a failure-free run does."""
        mine = [m for m in self._markers() if m.token == self.token]
        kept = [m.last for m in mine if m.checkpoint < checkpoint_id]
        keep = max([self._published, *kept])
        for name in self._names():
            match = self._pending_re.fullmatch(name)
            if match and match.group(2) == self.token and int(match.group(1)) > keep:
                (self.directory / name).unlink()
        for m in mine:
            if m.checkpoint >= checkpoint_id:
                m.path.unlink(missing_ok=True)
        self._unsynced.clear()
        self._next = self._first = keep + 1

    # -- files -----------------------------------------------------------------------------

    def _publish(self, marker: _Marker) -> None:
        """Rename every file of ``marker`` (from ``marker.token``) to its final name."""
        for n in range(marker.first, marker.last + 1):
            final = self.directory / f"{self.writer}-{n:08d}.{self.fmt}"
            pending = self._pending_path(n, marker.token)
            try:
                os.replace(pending, final)
            except FileNotFoundError:
                if not final.exists():
                    raise FileNotFoundError(
                        f"{self.directory}: file {n} of writer {self.writer!r} was staged for "
                        f"checkpoint {marker.checkpoint} but is neither at {pending.name} nor "
                        f"at {final.name} (the directory was changed by someone else)"
                    ) from None

    def _fence(self) -> None:
        owner = self._owner()
        if owner != self.token:
            raise FencedError(
                f"FileSink writer {self.writer!r} in {self.directory}: another process took it "
                f"over (owner {owner}, this one {self.token}); this one publishes nothing more"
            )

    def _pending_path(self, n: int, token: str | None = None) -> Path:
        name = f".{self.writer}-{n:08d}.{self.fmt}.{token or self.token}.pending"
        return self.directory / name

    def _owner_path(self) -> Path:
        return self.directory / f".{self.writer}.owner"

    def _owner(self) -> str | None:
        try:
            return self._owner_path().read_text().strip() or None
        except FileNotFoundError:
            return None

    def _names(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    def _markers(self) -> list[_Marker]:
        out = []
        for name in self._names():
            match = self._marker_re.fullmatch(name)
            if match:
                path = self.directory / name
                body = json.loads(path.read_bytes())
                checkpoint = int(match.group(2))
                out.append(_Marker(path, match.group(1), checkpoint, body["first"], body["last"]))
        return sorted(out, key=lambda m: m.checkpoint)


def _write_whole(path: Path, data: bytes) -> None:
    """``data`` at ``path`` atomically and durably: a temporary file, fsync, rename, fsync."""
    temporary = path.with_name(f"{path.name}.tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_path(path.parent)
