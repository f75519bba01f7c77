"""Committing outputs: per task, then per job.

A task attempt writes ``<dir>/_temporary/<task>.<attempt>.<ext>``; committing the task renames
it to ``<dir>/_temporary/<task>.<ext>`` (tasks are deterministic, so a later attempt's commit
replaces the file with the same rows). Committing the job renames the committed files, in task
order, to ``part-00000.<ext>``, ``part-00001.<ext>`` …, deletes part files a previous run left
beyond them, and writes ``_SUCCESS`` last. So a reader that waits for ``_SUCCESS`` sees one whole
result, and running a job again leaves the directory as one run does (a rerun is idempotent).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from strom._fs import fsync_path

TEMPORARY = "_temporary"
SUCCESS = "_SUCCESS"


class OutputCommitter:
    """The output directory ``directory`` of one job, files ending in ``.ext``."""

    def __init__(self, directory: Path, ext: str) -> None:
        self.directory = directory
        self.ext = ext
        self.staging = directory / TEMPORARY

    def start(self) -> None:
        """A new run: the last run's success marker and staging files go."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / SUCCESS).unlink(missing_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir()

    def attempt_path(self, task: str, attempt: int) -> Path:
        return self.staging / f"{task}.{attempt}.{self.ext}"

    def committed_path(self, task: str) -> Path:
        return self.staging / f"{task}.{self.ext}"

    def commit_task(self, task: str, attempt: int) -> Path | None:
        """Publish attempt ``attempt``'s file as the task's (None: the task wrote nothing)."""
        path = self.attempt_path(task, attempt)
        if not path.exists():
            return None
        final = self.committed_path(task)
        os.replace(path, final)
        return final

    def commit_job(self, tasks: Sequence[str]) -> list[Path]:
        """Publish the committed files of ``tasks`` (in that order) as the result."""
        published: list[Path] = []
        for task in tasks:
            source = self.committed_path(task)
            if source.exists():
                target = self.directory / f"part-{len(published):05d}.{self.ext}"
                os.replace(source, target)
                published.append(target)
        keep = {p.name for p in published}
        for stale in self.directory.glob(f"part-*.{self.ext}"):
            if stale.name not in keep:
                stale.unlink()
        shutil.rmtree(self.staging, ignore_errors=True)
        (self.directory / SUCCESS).touch()
        fsync_path(self.directory)
        return published
