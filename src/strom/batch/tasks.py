"""Tasks and their inputs: files packed into map tasks, buckets read by reduce tasks.

A map task reads a contiguous run of one source partition's files (in the partition's path
order), so ``(partition, file index, row)`` orders its rows exactly as the single-process runner's
``(partition, position)`` does: first/last ties break the same way. Many small files share a
task (packed up to a byte target), so 20,000 tiny files make a handful of tasks, not 20,000.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from strom.batch.planner import Branch

SEQ_FILE_SHIFT = 40
"""A row's order key is ``file_index << 40 | row``: tasks never hold 2**40 rows."""


@dataclass(frozen=True)
class FileInput:
    path: str
    partition: int
    """The row's source partition, numbered across the plan's sources."""
    file_index: int
    """The file's place in its partition's path order."""
    size: int


@dataclass(frozen=True)
class MapTask:
    """Map task ``id`` of job ``job``: ``files`` (one partition's, contiguous) of ``branch``."""

    id: str
    job: int
    branch: int
    files: tuple[FileInput, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def describe(self) -> str:
        """The task and its files, for error messages."""
        names = ", ".join(f.path for f in self.files[:3])
        more = f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
        return f"task {self.id} (files {names}{more})"


@dataclass(frozen=True)
class ShuffleInput:
    """One map task's output for one bucket (of join input ``side``: 0 left, 1 right)."""

    map_task: str
    path: str
    side: int = 0


@dataclass(frozen=True)
class ReduceTask:
    """Reduce task ``id`` of job ``job``: ``buckets`` (consecutive), from every map task's
    files of them."""

    id: str
    job: int
    buckets: tuple[int, ...]
    inputs: tuple[ShuffleInput, ...] = field(default=())

    def describe(self) -> str:
        first, last = self.buckets[0], self.buckets[-1]
        which = f"bucket {first}" if first == last else f"buckets {first}-{last}"
        return f"task {self.id} ({which}, {len(self.inputs)} shuffle file(s))"


Task = MapTask | ReduceTask


def coalesce(sizes: Sequence[int], target: int) -> list[list[int]]:
    """Consecutive non-empty buckets grouped so that each group's shuffle bytes stay within
    ``target`` (a larger bucket is a group alone): the map stage writes buckets for the worst
    case, and the reduce stage runs as many tasks as the actual partials need."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for bucket, size in enumerate(sizes):
        if size == 0:
            continue
        if current and total + size > target:
            groups.append(current)
            current, total = [], 0
        current.append(bucket)
        total += size
    if current:
        groups.append(current)
    return groups


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # a vanished file is reported by the task that reads it


def pack(job: int, branches: Sequence[Branch], target: int) -> list[MapTask]:
    """Map tasks for every branch: each partition's files in path order, cut into runs of at
    most ``target`` bytes (a larger file is a task alone)."""
    tasks: list[MapTask] = []
    for b, branch in enumerate(branches):
        source = branch.source
        for p in range(source.partition_count()):
            run: list[FileInput] = []
            run_bytes = 0
            for i, path in enumerate(source.paths[p :: source.partition_count()]):
                size = file_size(path)
                if run and run_bytes + size > target:
                    tasks.append(_task(job, len(tasks), b, run))
                    run, run_bytes = [], 0
                run.append(FileInput(path, branch.first_partition + p, i, size))
                run_bytes += size
            if run:
                tasks.append(_task(job, len(tasks), b, run))
    return tasks


def _task(job: int, n: int, branch: int, files: list[FileInput]) -> MapTask:
    return MapTask(f"j{job}-map-{n:05d}", job, branch, tuple(files))
