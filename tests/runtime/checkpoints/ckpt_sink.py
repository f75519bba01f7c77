"""A real two-phase sink for the checkpoint tests, file-backed, and crash hooks.

:class:`StagedFileSink` stages each checkpoint's rows in ``DIR/staged/<c>.ndjson`` (a temporary
file fsynced and renamed) at ``pre_commit(c)`` and publishes them by renaming to
``DIR/committed/<c>.ndjson`` at ``commit(c)``; ``recover(c)`` publishes what is staged up to
``c`` and deletes what is staged after it. What a reader sees is :func:`committed_rows`: the
committed files in id order. Exactly-once when run with checkpoints.

``CKPT_CRASH=<point>:<n>`` makes the process kill itself (SIGKILL, like ``kill -9``) at the
``n``-th time it reaches ``point``: ``pre_commit`` (staged, no checkpoint written), ``commit``
(the checkpoint written, nothing published) or ``store`` (inside a checkpoint's file writes).
With ``CKPT_CRASH_ONCE=<path>`` only the first process to get there dies (it creates ``path``):
a restarted worker inherits the environment, and must not die again.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from strom.engine.contracts import Guarantee

_hits: Counter[str] = Counter()


def crash_point(point: str) -> None:
    """Die here if ``CKPT_CRASH`` names this point and its count is reached."""
    spec = os.environ.get("CKPT_CRASH", "")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != point:
        return
    _hits[point] += 1
    if _hits[point] == int(count):
        once = os.environ.get("CKPT_CRASH_ONCE")
        if once:  # one crash among all the processes sharing this environment (workers)
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)


def install_store_crash() -> None:
    """Make the ``store`` crash point fire between two file writes of a checkpoint."""
    from strom.runtime.checkpoints import store

    original = store._write_durable

    def write(path: Path, data: bytes) -> None:
        original(path, data)
        crash_point("store")

    store._write_durable = write  # type: ignore[assignment]


class StagedFileSink:
    """See the module docstring."""

    guarantee: Guarantee = "exactly-once"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._buffer: list[dict[str, Any]] = []

    def open(self) -> None:
        (self.path / "staged").mkdir(parents=True, exist_ok=True)
        (self.path / "committed").mkdir(parents=True, exist_ok=True)

    def write(self, batch: pl.DataFrame) -> None:
        self._buffer.extend(batch.to_dicts())

    def pre_commit(self, checkpoint_id: int) -> None:
        staged = self.path / "staged" / f"{checkpoint_id:09d}.ndjson"
        tmp = staged.with_suffix(".tmp")
        with tmp.open("w") as handle:
            for row in self._buffer:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, staged)
        self._buffer = []
        crash_point("pre_commit")

    def commit(self, checkpoint_id: int) -> None:
        crash_point("commit")
        self._publish(checkpoint_id)

    def abort(self, checkpoint_id: int) -> None:
        self._buffer = []
        (self.path / "staged" / f"{checkpoint_id:09d}.ndjson").unlink(missing_ok=True)

    def recover(self, checkpoint_id: int | None) -> None:
        self.open()
        self._buffer = []
        self._publish(checkpoint_id or 0)
        for staged in (self.path / "staged").iterdir():
            staged.unlink()  # staged after the checkpoint restored: never decided

    def close(self) -> None:
        self._buffer = []  # unstaged rows are not published (the last checkpoint staged all)

    def _publish(self, up_to: int) -> None:
        """Publish what is staged up to ``up_to``. A checkpoint id published twice (a protocol
        bug) is kept twice, never replaced, so the duplicate shows in the output."""
        for staged in sorted((self.path / "staged").glob("*.ndjson")):
            if int(staged.stem) <= up_to:
                target = self.path / "committed" / staged.name
                copies = 0
                while target.exists():
                    copies += 1
                    target = target.with_name(f"{staged.stem}.{copies}.ndjson")
                os.rename(staged, target)


def committed_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every published row, in commit order."""
    rows = []
    for committed in sorted((Path(path) / "committed").glob("*.ndjson")):
        rows.extend(json.loads(line) for line in committed.read_text().splitlines())
    return rows


class DecidingStagedFileSink(StagedFileSink):
    """A :class:`StagedFileSink` whose commit is the checkpoint's decision
    (:class:`~strom.engine.contracts.CommitDecider`): ``commit(c)`` first records ``c`` in
    ``DIR/decided`` (atomically: the point of no return), then publishes; recovery restores
    the checkpoint :meth:`committed_checkpoint` reports."""

    def committed_checkpoint(self) -> int | None:
        decided = self.path / "decided"
        return int(decided.read_text()) if decided.exists() else None

    def commit(self, checkpoint_id: int) -> None:
        crash_point("commit")
        tmp = self.path / "decided.tmp"
        tmp.write_text(str(checkpoint_id))
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.rename(tmp, self.path / "decided")
        crash_point("decided")
        self._publish(checkpoint_id)
