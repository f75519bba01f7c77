"""The Python side of ``mapInArrow``: strom's own Polars code run inside Spark's tasks.

Each class here is a picklable callable that Spark ships to its Python workers and calls with an
iterator of Arrow record batches of one partition. Batches arrive in Spark's types and are cast to
the node's Polars input schema first (:func:`strom.spark.types.to_polars`), so the Polars code
sees exactly the frame the bounded runner would show it; its output is cast to the Arrow schema
Spark was promised.

Internal columns (:data:`~strom.engine.constants.PART`, :data:`~strom.engine.constants.SEQ`:
the tie-breaking order of ``first``/``last``) ride along beside the user's columns: a filter or
``with_columns`` keeps them row for row, a ``select`` gets them back after it; ``map_batches``
and ``map`` drop them (their output rows are not the input's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

from strom.connectors.files import FileFormat
from strom.connectors.memory import MemorySource
from strom.engine.constants import PART, SEQ
from strom.engine.transforms import compile_transform
from strom.pipeline.plan import SelectNode, SourceNode, StatelessNode
from strom.spark.types import to_polars

ORDER = (PART, SEQ)
ROW_BITS = 40
"""A file's row ``i`` has ``SEQ = file_index << ROW_BITS | i``: increasing in path order, then
row order (files of up to 2**40 rows), which is all ``first``/``last`` compare."""

_NOWHERE = SourceNode(MemorySource([[]], schema=pl.Schema()), None, name="spark-task")


def with_order(schema: pl.Schema) -> pl.Schema:
    """``schema`` followed by the :data:`ORDER` columns."""
    return pl.Schema({**schema, **dict.fromkeys(ORDER, pl.Int64())})


def detached(node: StatelessNode) -> StatelessNode:
    """``node`` cut off from its upstream plan, so pickling it ships only the node itself."""
    return dataclasses.replace(node, input=_NOWHERE)


def _batches(frame: pl.DataFrame, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    table = frame.select(schema.names).to_arrow().cast(schema)
    yield from table.to_batches()


@dataclass(frozen=True)
class PolarsStep:
    """Runs a stateless node (detached) over each batch: ``input_schema`` is its Polars input,
    ``arrow_schema`` what Spark expects back; ``ordered``: the batches carry :data:`ORDER`."""

    node: StatelessNode
    input_schema: pl.Schema
    arrow_schema: pa.Schema
    ordered: bool

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        keep_order = self.ordered and not isinstance(self.node, SelectNode)
        schema = with_order(self.input_schema) if self.ordered else self.input_schema
        apply = compile_transform(self.node)  # prepared once per partition, not per batch
        for batch in batches:
            frame = to_polars(pa.Table.from_batches([batch]), schema)
            if keep_order:
                out = apply(frame)  # filter/with_columns keep every column
            else:
                out = apply(frame.drop(ORDER, strict=False))
                if self.ordered:
                    out = out.hstack(frame.select(ORDER))
            yield from _batches(out, self.arrow_schema)


@dataclass(frozen=True)
class FileReader:
    """Reads the files whose indices arrive (a Spark ``range``) exactly as
    :class:`~strom.connectors.FileSource` does (Polars, cast to the first file's schema), adding
    each row's :data:`PART` and :data:`SEQ`."""

    paths: Sequence[str]
    partitions: Sequence[int]
    format: FileFormat
    schema: pl.Schema
    arrow_schema: pa.Schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for index in batch.column(0).to_pylist():
                frame = self._read(self.paths[index])
                frame = frame.with_columns(
                    pl.lit(self.partitions[index], dtype=pl.Int64).alias(PART),
                    (pl.int_range(pl.len(), dtype=pl.Int64) + (index << ROW_BITS)).alias(SEQ),
                )
                yield from _batches(frame, self.arrow_schema)

    def _read(self, path: str) -> pl.DataFrame:
        try:
            if self.format == "csv":
                lf = pl.scan_csv(path)
            elif self.format == "ndjson":
                lf = pl.scan_ndjson(path)
            else:
                lf = pl.scan_parquet(path)
            return lf.select(pl.col(n).cast(t) for n, t in self.schema.items()).collect()
        except Exception as exc:  # name the file: a task's error is all the driver shows
            raise RuntimeError(f"reading {path}: {type(exc).__name__}: {exc}") from exc
