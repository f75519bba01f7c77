"""File source and sinks: Parquet, CSV and newline-delimited JSON, read and written by Polars."""

from __future__ import annotations

import glob as globlib
import logging
from pathlib import Path
from typing import Literal

import polars as pl

from strom._fs import fsync_path
from strom.connectors.staged_files import StagedFiles
from strom.engine.contracts import (
    END_OF_PARTITION,
    AtLeastOnceSink,
    Guarantee,
    PollResult,
    Position,
    PositionError,
    int_field,
)

log = logging.getLogger("strom.connectors")

FileFormat = Literal["parquet", "csv", "ndjson"]
FORMATS: tuple[FileFormat, ...] = ("parquet", "csv", "ndjson")


def _check_format(fmt: str) -> FileFormat:
    for known in FORMATS:
        if fmt == known:
            return known
    raise ValueError(f"unknown file format {fmt!r}; use one of {', '.join(FORMATS)}")


class FileReadError(RuntimeError):
    """An input file cannot be read: ``path`` and ``reason`` (the reader's error)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read input file {path}: {reason}")
        self.path = path
        self.reason = reason


class FileSource:
    """Every file matching ``glob`` (sorted by path), spread round-robin over ``partitions``.

    In a streaming run each file is one micro-batch of its partition, in path order. The bounded
    runner scans each partition's files together (Polars reads them in parallel). The file set is
    fixed when the source is created. The schema is the first file's.

    **Positions:** ``{"file": n, "after": path}``: ``n`` files of the partition delivered, the
    last being ``path`` (None before the first). Replayable: a reader seeked to a position
    rereads the files after it; seeking checks that the ``n``-th file is still ``path``, so a
    changed file set (files added in between sort differently) is a
    :class:`~strom.engine.contracts.PositionError`, not silently other data.
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
        return _FilePartition(self, self._assignment[index], f"FileSource partition {index}")

    def scan_partition(self, index: int) -> pl.LazyFrame:
        schema = self._schema
        return self._scan(self._assignment[index]).select(
            pl.col(n).cast(t) for n, t in schema.items()
        )

    def _read(self, path: str) -> pl.DataFrame:
        try:
            frame = self._scan([path]).collect()
            return frame.select(pl.col(n).cast(t) for n, t in self._schema.items())
        except pl.exceptions.PolarsError as exc:
            raise FileReadError(path, f"{type(exc).__name__}: {exc}") from exc

    def find_unreadable(self, paths: list[str] | None = None) -> FileReadError | None:
        """The error of the first of ``paths`` (default: all of the source's files) that does
        not read whole (every value decoded, cast to the source's schema) on its own, or
        ``None``. A run over many files calls it after a failure, to name the file."""
        for path in self.paths if paths is None else paths:
            try:
                self._scan([path]).select(
                    pl.col(n).cast(t).null_count() for n, t in self._schema.items()
                ).collect(engine="streaming")
            except Exception as exc:  # the reader's own error, whatever it is, names the cause
                return FileReadError(path, f"{type(exc).__name__}: {exc}")
        return None

    def close(self) -> None:
        """Nothing to release (each file is read whole by its poll)."""


class _FilePartition:
    def __init__(self, source: FileSource, paths: list[str], owner: str) -> None:
        self._source = source
        self._paths = paths
        self._owner = owner
        self._next = 0

    def poll(self) -> PollResult:
        if self._next >= len(self._paths):
            return END_OF_PARTITION
        path = self._paths[self._next]
        self._next += 1
        return self._source._read(path)

    def position(self) -> Position:
        return {"file": self._next, "after": self._paths[self._next - 1] if self._next else None}

    def seek(self, position: Position) -> None:
        n = int_field(position, "file", self._owner, high=len(self._paths))
        after = position.get("after")
        if (self._paths[n - 1] if n else None) != after:
            raise PositionError(
                f"{self._owner}: its file {n} is {self._paths[n - 1] if n else None!r}, not "
                f"{after!r}: the set of files changed since the position was taken"
            )
        self._next = n


class FileSink(AtLeastOnceSink):
    """Writes result batches under directory ``path``.

    **Delivery guarantee: at-least-once** by default. ``ndjson`` appends every batch to
    ``path/part-0.ndjson``; ``parquet`` writes one file per batch, ``path/part-00000.parquet``,
    ``part-00001.parquet`` … (Parquet cannot be appended), numbered on from the files already
    there (a restarted run adds files, it never replaces one), each written under a temporary
    name and renamed whole. A batch is in the file (the OS's cache) when ``write`` returns;
    :meth:`pre_commit` fsyncs every file written since the last one, and the directory, so what
    was written before a checkpoint survives a power loss. A crash between checkpoints can leave
    a torn last line or file, and a replay writes its rows again.

    **Exactly-once** with ``guarantee="exactly-once"``, in a run with checkpoints (which calls
    :meth:`recover` before the first write; a write before it is refused): each batch becomes
    one file, written under a hidden temporary name ``.<final>.<token>.pending`` (``token``: the
    writing process's); :meth:`pre_commit` fsyncs them and records, in a hidden marker file,
    which files the checkpoint covers; :meth:`commit` renames them to their final names
    ``<sink_id>-<n>.<format>`` (``n``: 8 digits, numbered on from the published files), an
    idempotent step (a file renamed already is skipped). After a crash at any moment,
    ``recover(c)`` renames what the dead process pre-committed for checkpoints ``<= c`` and
    deletes everything else it staged, so with the sources replayed from ``c`` the directory
    ends with exactly the files (same names, same rows) a failure-free run writes. Readers of
    ``*.parquet`` / ``*.ndjson`` (and a :class:`FileSource` over them) never see a temporary
    file: hidden, and of another suffix. A process whose sink another one has recovered since is
    fenced at its next commit (a ``FencedError``; on a local file system). ``sink_id`` (default
    ``"part"``) tells the files of several sinks in one directory apart.
    """

    def __init__(
        self,
        path: str | Path,
        format: Literal["ndjson", "parquet"],
        *,
        guarantee: Guarantee = "at-least-once",
        sink_id: str = "part",
    ) -> None:
        if format not in ("ndjson", "parquet"):
            raise ValueError(f"FileSink writes 'ndjson' or 'parquet', not {format!r}")
        if guarantee not in ("at-least-once", "exactly-once"):
            raise ValueError(
                f"guarantee must be 'at-least-once' or 'exactly-once', not {guarantee!r}"
            )
        if not sink_id or "/" in sink_id or sink_id.startswith("."):
            raise ValueError(f"sink_id must be a plain file name prefix, not {sink_id!r}")
        self.directory = Path(path)
        self.format = format
        self.guarantee = guarantee
        self.sink_id = sink_id
        self.worker: int | None = None
        self._count = 0
        self._unsynced: set[Path] = set()
        self._staged: StagedFiles | None = None  # exactly-once, once recovered

    def __repr__(self) -> str:
        return f"FileSink({str(self.directory)!r}, {self.format!r}, guarantee={self.guarantee!r})"

    def set_worker(self, index: int) -> None:
        """Name this sink's files by worker ``index`` too (several workers share a directory)."""
        self.worker = index

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._staged = None
        if self.format == "parquet":
            self._count = max(
                (_part_number(f.name) + 1 for f in self.directory.glob("part-*.parquet")),
                default=0,
            )

    def write(self, batch: pl.DataFrame) -> None:
        if self.guarantee == "exactly-once":
            if self._staged is None:
                raise RuntimeError(
                    f"{self!r} is exactly-once: it publishes files at checkpoints only, so it "
                    "needs a run with checkpoints (strom run --checkpoint-dir), which calls "
                    "recover() before the first write"
                )
            if batch.height:
                self._staged.write(batch)
            return
        if self.format == "parquet":
            path = self.directory / f"part-{self._count:05d}.parquet"
            temporary = path.with_name(f".{path.name}.tmp")
            batch.write_parquet(temporary)
            temporary.replace(path)  # a reader never sees half a file
        else:
            path = self.directory / "part-0.ndjson"
            with path.open("ab") as out:
                batch.write_ndjson(out)
        self._unsynced.add(path)
        self._count += 1

    def pre_commit(self, checkpoint_id: int) -> None:
        """Make every file written since the last call durable (fsync), then the directory
        (which holds their names); exactly-once: record which files ``checkpoint_id`` covers."""
        if self.guarantee == "exactly-once":
            self._recovered("pre_commit").pre_commit(checkpoint_id)
            return
        for path in sorted(self._unsynced):
            fsync_path(path)
        if self._unsynced:
            fsync_path(self.directory)
        self._unsynced.clear()

    def commit(self, checkpoint_id: int) -> None:
        """Exactly-once: rename the files of every pre-commit ``<= checkpoint_id`` to their
        final names (idempotent)."""
        if self.guarantee == "exactly-once":
            self._recovered("commit").commit(checkpoint_id)

    def abort(self, checkpoint_id: int) -> None:
        """Exactly-once: delete the files written since the last pre-commit before
        ``checkpoint_id``; the sources must then replay from the last completed checkpoint.
        (A run that goes on without replaying must not abort: the next pre-commit covers
        these files too.)"""
        if self.guarantee == "exactly-once":
            self._recovered("abort").abort(checkpoint_id)

    def recover(self, checkpoint_id: int | None) -> None:
        """Exactly-once: publish what an earlier process pre-committed for checkpoints
        ``<= checkpoint_id``, delete the rest it staged, and take the sink over."""
        if self.guarantee == "exactly-once":
            writer = self.sink_id if self.worker is None else f"{self.sink_id}-w{self.worker}"
            self.directory.mkdir(parents=True, exist_ok=True)
            self._staged = StagedFiles.recover(self.directory, writer, self.format, checkpoint_id)

    def close(self) -> None:
        """Exactly-once: staged files stay staged (the next run's recover decides); files no
        pre-commit covers are logged, as the next recovery deletes them."""
        if self._staged is not None and self._staged.uncovered:
            log.warning(
                "%r closed with %d file(s) written after its last pre-commit: they are not "
                "published, and the next recovery deletes them (a run ends with a checkpoint)",
                self,
                self._staged.uncovered,
            )
        self._staged = None

    def _recovered(self, what: str) -> StagedFiles:
        if self._staged is None:
            raise RuntimeError(f"FileSink.{what}() before recover()")
        return self._staged


def _part_number(name: str) -> int:
    """``part-00042.parquet`` -> 42 (-1 for a name that is not a part file)."""
    digits = name.removeprefix("part-").removesuffix(".parquet")
    return int(digits) if digits.isdigit() else -1
