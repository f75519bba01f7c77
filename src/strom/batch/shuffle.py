"""Shuffle files: a map task's partials split into buckets, one Arrow IPC file per bucket.

A row's bucket is a hash of its group (the window's keys and end, the aggregation's keys, or
the join key) modulo the bucket count, so every partial of one group, and every row of one join
key from either input, meets in one reduce task. The hash is of the values alone (not the
columns' names): a left key and the right key it equals, of one type, share a bucket. Files
are written under a temporary name and renamed whole: a file under its final name is complete,
and a killed attempt leaves only a temporary that the next attempt ignores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl

BUCKET = "__strom_bucket"
HASH_SEED = 0x5702


def bucket_expr(columns: Sequence[str], buckets: int) -> pl.Expr:
    """Each row's bucket, from its ``columns``: deterministic for one Polars version."""
    if not columns:
        return pl.lit(0, pl.UInt64)
    return pl.struct(list(columns)).hash(HASH_SEED) % buckets


def shuffle_path(directory: Path, map_task: str, bucket: int) -> Path:
    return directory / f"{map_task}-b{bucket:05d}.arrow"


def write_buckets(
    partials: pl.DataFrame,
    group: Sequence[str],
    buckets: int,
    directory: Path,
    map_task: str,
    attempt: int,
) -> dict[int, str]:
    """Write ``partials`` split by bucket; returns each non-empty bucket's file."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[int, str] = {}
    if partials.height == 0:
        return written
    split = partials.with_columns(bucket_expr(group, buckets).alias(BUCKET)).partition_by(
        BUCKET, as_dict=True, include_key=False
    )
    for (bucket,), frame in split.items():
        assert isinstance(bucket, int)
        final = shuffle_path(directory, map_task, bucket)
        temporary = final.with_name(f".{final.name}.{attempt}.tmp")
        frame.write_ipc(temporary)
        os.replace(temporary, final)
        written[bucket] = str(final)
    return written


def missing(paths: Sequence[str]) -> list[str]:
    """The shuffle files of ``paths`` that are not there (lost, to be recomputed)."""
    return [p for p in paths if not os.path.exists(p)]
