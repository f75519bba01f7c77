"""Tasks and their inputs: files packed into map tasks, buckets read by reduce tasks.

A map task reads a contiguous run of one source partition's files (in the partition's path
order), so ``(partition, file index, row)`` orders its rows exactly as the single-process runner's
``(partition, position)`` does: first/last ties break the same way. Many small files share a
task (packed up to a byte target), so 20,000 tiny files make a handful of tasks, not 20,000.
A map task over an earlier stage's results reads a contiguous run of its output files (in task
order: one partition, -1, as the single-process runner numbers a stage's results).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from strom.batch.planner import Branch, StageInput

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
    """Map task ``id`` of stage ``stage`` of job ``job``: ``files`` (one partition's,
    contiguous) of the stage's branch ``branch``."""

    id: str
    job: int
    branch: int
    files: tuple[FileInput, ...]
    stage: int = 0

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
    """Reduce task ``id`` of stage ``stage`` of job ``job``: ``buckets`` (consecutive), from
    every map task's files of them. A sort's reduce task reads every map task's sorted run and
    keeps the rows in its range: ``bounds``, the rows (``None``: unbounded) that start it and
    the next one (:mod:`strom.batch.sort`)."""

    id: str
    job: int
    buckets: tuple[int, ...]
    inputs: tuple[ShuffleInput, ...] = field(default=())
    stage: int = 0
    bounds: tuple[Any, Any] = field(default=(None, None), compare=False)

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


def task_prefix(job: int, stage: int) -> str:
    """Task ids of a job's first stage are ``j<job>-map-…``, of a later one ``j<job>-s<n>-…``."""
    return f"j{job}" if stage == 0 else f"j{job}-s{stage}"


def input_paths(branch: Branch, outputs: Mapping[int, Sequence[str]]) -> list[list[str]]:
    """Each partition's files of ``branch``'s input, in order (``outputs``: each finished
    stage's output files)."""
    source = branch.source
    if isinstance(source, StageInput):
        return [list(outputs[source.stage])]
    n = source.partition_count()
    return [list(source.paths[p::n]) for p in range(n)]


def pack(
    job: int,
    branches: Sequence[Branch],
    target: int,
    stage: int = 0,
    outputs: Mapping[int, Sequence[str]] | None = None,
    skip: Collection[int] = (),
) -> list[MapTask]:
    """Map tasks for every branch (but those in ``skip``: a broadcast join input, which every
    task reads whole): each partition's files in path order, cut into runs of at most
    ``target`` bytes (a larger file is a task alone)."""
    tasks: list[MapTask] = []

    def add(branch: int, files: list[FileInput]) -> None:
        name = f"{task_prefix(job, stage)}-map-{len(tasks):05d}"
        tasks.append(MapTask(name, job, branch, tuple(files), stage))

    for b, branch in enumerate(branches):
        if b in skip:
            continue
        for p, paths in enumerate(input_paths(branch, outputs or {})):
            partition = -1 if isinstance(branch.source, StageInput) else branch.first_partition + p
            run: list[FileInput] = []
            run_bytes = 0
            for i, path in enumerate(paths):
                size = file_size(path)
                if run and run_bytes + size > target:
                    add(b, run)
                    run, run_bytes = [], 0
                run.append(FileInput(path, partition, i, size))
                run_bytes += size
            if run:
                add(b, run)
    return tasks
