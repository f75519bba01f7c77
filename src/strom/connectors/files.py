"""File source and sinks: Parquet, CSV and newline-delimited JSON, read and written by Polars."""

from __future__ import annotations

import glob as globlib
from pathlib import Path
from typing import Literal

import polars as pl

from strom.pipeline.io import END_OF_PARTITION, PollResult

FileFormat = Literal["parquet", "csv", "ndjson"]
FORMATS: tuple[FileFormat, ...] = ("parquet", "csv", "ndjson")


def _check_format(fmt: str) -> FileFormat:
    for known in FORMATS:
        if fmt == known:
            return known
    raise ValueError(f"unknown file format {fmt!r}; use one of {', '.join(FORMATS)}")


class FileSource:
    """Every file matching ``glob`` (sorted by path), spread round-robin over ``partitions``.

    In a streaming run each file is one micro-batch of its partition, in path order. The bounded
    runner scans each partition's files together (Polars reads them in parallel). The file set is
    fixed when the source is created. The schema is the first file's.

    Delivery guarantee: replayable; a restarted run rereads every file from the start.
    """

    def __init__(self, glob: str, format: FileFormat, *, partitions: int = 1) -> None:
        self.format = _check_format(format)
        self.paths = sorted(globlib.glob(glob, recursive=True))
        if not self.paths:
            raise FileNotFoundError(f"no files match {glob!r}")
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        count = min(partitions, len(self.paths))
        self._assignment = [self.paths[i::count] for i in range(count)]
        self._schema = self._scan([self.paths[0]]).collect_schema()

    def _scan(self, paths: list[str]) -> pl.LazyFrame:
        if self.format == "parquet":
            return pl.scan_parquet(paths)
        if self.format == "csv":
            return pl.scan_csv(paths)
        return pl.scan_ndjson(paths)

    def schema(self) -> pl.Schema | None:
        return self._schema

    def partition_count(self) -> int:
        return len(self._assignment)

    def open_partition(self, index: int) -> _FilePartition:
        return _FilePartition(self, self._assignment[index])

    def scan_partition(self, index: int) -> pl.LazyFrame:
        schema = self._schema
        return self._scan(self._assignment[index]).select(
            pl.col(n).cast(t) for n, t in schema.items()
        )

    def _read(self, path: str) -> pl.DataFrame:
        frame = self._scan([path]).collect()
        return frame.select(pl.col(n).cast(t) for n, t in self._schema.items())


class _FilePartition:
    def __init__(self, source: FileSource, paths: list[str]) -> None:
        self._source = source
        self._paths = paths
        self._next = 0

    def poll(self) -> PollResult:
        if self._next >= len(self._paths):
            return END_OF_PARTITION
        path = self._paths[self._next]
        self._next += 1
        return self._source._read(path)


class FileSink:
    """Writes result batches under directory ``path``.

    ``ndjson`` appends every batch to ``path/part-0.ndjson``; ``parquet`` writes one file per
    batch, ``path/part-00000.parquet``, ``part-00001.parquet`` … (Parquet cannot be appended).

    Delivery guarantee: none across crashes yet — a batch is written when emitted, so a crash can
    leave a partial file and a rerun writes results again. Exactly-once (write to a temporary
    name, rename on checkpoint commit) arrives with checkpoints.
    """

    def __init__(self, path: str | Path, format: Literal["ndjson", "parquet"]) -> None:
        if format not in ("ndjson", "parquet"):
            raise ValueError(f"FileSink writes 'ndjson' or 'parquet', not {format!r}")
        self.directory = Path(path)
        self.format = format
        self._count = 0

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, batch: pl.DataFrame) -> None:
        if self.format == "parquet":
            batch.write_parquet(self.directory / f"part-{self._count:05d}.parquet")
        else:
            with (self.directory / "part-0.ndjson").open("ab") as out:
                batch.write_ndjson(out)
        self._count += 1

    def close(self) -> None:
        pass
