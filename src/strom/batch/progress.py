"""Progress of a local-engine run, per stage: tasks done of total, rows, MB/s, ETA, retries
and skipped files.

The driver calls a :class:`Progress`'s hooks; each keeps a :class:`StageStats` per stage and
renders it: :class:`RichProgress` (a bar per stage, on a terminal), :class:`PlainProgress` (a
line per finished task at most once a second, and one per finished stage), :class:`JsonProgress`
(one JSON object per event, for machines), or nothing (the base class). Hooks run on the driver
between tasks and never fail the run.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar

ProgressMode = Literal["auto", "rich", "plain", "json", "none"]


@dataclass
class StageStats:
    stage: str
    tasks: int
    bytes_total: int
    done: int = 0
    rows: int = 0
    bytes: int = 0
    retries: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.done == 0 or self.done >= self.tasks:
            return None
        return self.elapsed / self.done * (self.tasks - self.done)


class Progress:
    """Keeps the stages' statistics; renders nothing (subclasses do)."""

    def __init__(self) -> None:
        self.stages: dict[str, StageStats] = {}

    def stage_started(self, stage: str, tasks: int, bytes_total: int) -> None:
        self.stages[stage] = StageStats(stage, tasks, bytes_total)
        self._render(self.stages[stage], "started")

    def task_done(self, stage: str, rows: int, bytes_read: int) -> None:
        stats = self.stages[stage]
        stats.done += 1
        stats.rows += rows
        stats.bytes += bytes_read
        self._render(stats, "task")

    def retried(self, stage: str, task: str, reason: str) -> None:
        self.stages[stage].retries += 1
        self._render(self.stages[stage], "retry", task=task, reason=reason)

    def skipped(self, stage: str, path: str, reason: str) -> None:
        self.stages[stage].skipped += 1
        self._render(self.stages[stage], "skipped", file=path, reason=reason)

    def stage_done(self, stage: str) -> None:
        self._render(self.stages[stage], "done")

    def close(self) -> None:
        """The run ended (successfully or not)."""

    def _render(self, stats: StageStats, event: str, **detail: str) -> None:
        pass


def _line(stats: StageStats) -> str:
    eta = stats.eta_s
    return (
        f"{stats.stage}: {stats.done}/{stats.tasks} tasks, {stats.rows:,} rows, "
        f"{stats.mb_per_s:.1f} MB/s, ETA {'-' if eta is None else f'{eta:.0f}s'}, "
        f"retries {stats.retries}, skipped files {stats.skipped}"
    )


class PlainProgress(Progress):
    """Plain lines (for logs and pipes): at most one per second while a stage runs."""

    def __init__(self, out: IO[str] | None = None, interval_s: float = 1.0) -> None:
        super().__init__()
        self.out = out or sys.stderr
        self.interval_s = interval_s
        self._last = 0.0

    def _render(self, stats: StageStats, event: str, **detail: str) -> None:
        now = time.monotonic()
        if event == "task" and now - self._last < self.interval_s and stats.done < stats.tasks:
            return
        self._last = now
        extra = "".join(f" {k}={v}" for k, v in detail.items())
        print(f"[{event}] {_line(stats)}{extra}", file=self.out, flush=True)


class JsonProgress(Progress):
    """One JSON object per event and line: ``{"event": ..., "stage": ..., "done": ...}``."""

    def __init__(self, out: IO[str] | None = None) -> None:
        super().__init__()
        self.out = out or sys.stderr

    def _render(self, stats: StageStats, event: str, **detail: str) -> None:
        record = {k: v for k, v in asdict(stats).items() if k != "started"}
        record.update(event=event, elapsed_s=round(stats.elapsed, 3), **detail)
        record["mb_per_s"] = round(stats.mb_per_s, 2)
        print(json.dumps(record), file=self.out, flush=True)


class RichProgress(Progress):
    """A rich bar per stage (tasks, rows, MB/s, ETA, retries, skipped files)."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows]:,} rows {task.fields[mbs]:.1f} MB/s"),
            TimeRemainingColumn(),
            TextColumn("retries {task.fields[retries]} skipped {task.fields[skipped]}"),
            console=console or Console(stderr=True),
        )
        self._ids: dict[str, TaskID] = {}
        self._bar.start()

    def _render(self, stats: StageStats, event: str, **detail: str) -> None:
        fields: dict[str, Any] = {"rows": stats.rows, "mbs": stats.mb_per_s}
        fields.update(retries=stats.retries, skipped=stats.skipped)
        if stats.stage not in self._ids:
            self._ids[stats.stage] = self._bar.add_task(stats.stage, total=stats.tasks, **fields)
        self._bar.update(self._ids[stats.stage], completed=stats.done, **fields)
        if event in ("retry", "skipped"):
            self._bar.console.print(f"{stats.stage}: {event} {' '.join(detail.values())}")

    def close(self) -> None:
        self._bar.stop()


def make_progress(mode: ProgressMode) -> Progress:
    """The reporter for ``mode`` (``auto``: a bar on a terminal, plain lines otherwise)."""
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "plain"
    if mode == "rich":
        return RichProgress()
    if mode == "plain":
        return PlainProgress()
    if mode == "json":
        return JsonProgress()
    return Progress()
