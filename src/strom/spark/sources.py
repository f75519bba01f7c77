"""Sources as Spark DataFrames, each row carrying its tie-breaking order (PART, SEQ).

- A :class:`~strom.connectors.FileSource` of Parquet files is read by Spark's own Parquet
  reader (column pruning, parallel reads, any number of files); each row's ``PART`` is its
  file's strom partition (files are dealt round-robin in path order, as ``FileSource`` deals
  them) and its ``SEQ`` the file's index and the row's index in it (``_metadata.row_index``).
- CSV and NDJSON files are read by Polars inside Spark tasks (:class:`strom.spark.arrow.
  FileReader`), one task per group of files, so they parse exactly as the other backends parse
  them (Spark's CSV and JSON readers infer and convert differently).
- Any other bounded source (``MemorySource`` …) is scanned on the driver and handed to Spark as
  Arrow: fine for tests and small inputs, not for data larger than the driver.
"""

from __future__ import annotations

import os
from urllib.parse import unquote

import polars as pl
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from strom.connectors.files import FileSource
from strom.engine.constants import PART, SEQ
from strom.engine.contracts import BoundedSource
from strom.pipeline.plan import SourceNode
from strom.pipeline.validate import PlanError
from strom.spark.arrow import ROW_BITS, FileReader
from strom.spark.types import spark_schema, spark_type

_FILES_PER_TASK = 64
"""CSV/NDJSON files per Spark task at most (so 20,000 small files are not 20,000 tasks)."""


def read_source(
    spark: SparkSession, node: SourceNode, first_partition: int, ordered: bool = True
) -> tuple[DataFrame, pl.Schema]:
    """``node``'s rows with their columns in its schema's Spark types, plus PART and SEQ; and
    that schema (a bounded source that declares none has its first partition's).

    ``ordered=False`` (no ``first``/``last`` in the plan) leaves PART and SEQ out of Parquet
    reads: Spark does not prune ``_metadata`` once referenced, and reading row indices costs
    (about a third of a simple group-by's time)."""
    source = node.source
    schema = source.schema()
    where = f"source {node.name!r}"
    if isinstance(source, FileSource):
        assert schema is not None  # a FileSource's schema is its first file's
        count = source.partition_count()
        parts = [first_partition + i % count for i in range(len(source.paths))]
        if source.format == "parquet":
            if not ordered:
                return _parquet_columns(
                    spark.read.parquet(*_absolute(source)), schema, where
                ), schema
            return _parquet(spark, source, schema, parts, where), schema
        return _polars_files(spark, source, schema, parts, where), schema
    if not isinstance(source, BoundedSource):
        raise PlanError(
            f"{where} ({type(source).__name__}) is not bounded: the Spark backend reads files "
            "and bounded sources; run streams with strom.runtime"
        )
    return _driver_scan(spark, source, first_partition, where)


def _order_schema(schema: pl.Schema) -> pl.Schema:
    return pl.Schema({**schema, PART: pl.Int64(), SEQ: pl.Int64()})


def _parquet(
    spark: SparkSession, source: FileSource, schema: pl.Schema, parts: list[int], where: str
) -> DataFrame:
    paths = _absolute(source)
    df = spark.read.parquet(*paths)
    index = {p: i for i, p in enumerate(paths)}
    # Spark names each file by a URI; _metadata.file_path and inputFiles() encode it alike
    keys: dict[str, int] = {}
    for uri in df.inputFiles():
        local = unquote(_strip_scheme(uri))
        if local not in index:
            raise PlanError(f"{where}: Spark reads {uri}, which is not one of its files")
        keys[_strip_scheme(uri)] = index[local]
    file_key = F.regexp_replace(F.col("_metadata.file_path"), "^file:/+", "/")
    file_index = F.create_map(*[x for k, i in keys.items() for x in (F.lit(k), F.lit(i))])[file_key]
    file_part = F.create_map(*[x for k, i in keys.items() for x in (F.lit(k), F.lit(parts[i]))])[
        file_key
    ]
    seq = file_index.cast("long") * F.lit(1 << ROW_BITS) + F.col("_metadata.row_index")
    return _parquet_columns(df, schema, where, file_part.cast("long").alias(PART), seq.alias(SEQ))


def _absolute(source: FileSource) -> list[str]:
    return [os.path.abspath(p) for p in source.paths]  # the JVM's working directory is not ours


def _parquet_columns(df: DataFrame, schema: pl.Schema, where: str, *extra: Column) -> DataFrame:
    columns = [
        F.col(f"`{n}`").cast(spark_type(t, f"{where} column {n!r}")).alias(n)
        for n, t in schema.items()
    ]
    return df.select(*columns, *extra)


def _strip_scheme(uri: str) -> str:
    if uri.startswith("file:"):
        return "/" + uri.removeprefix("file:").lstrip("/")
    return uri


def _polars_files(
    spark: SparkSession, source: FileSource, schema: pl.Schema, parts: list[int], where: str
) -> DataFrame:
    out = spark_schema(_order_schema(schema), where)
    files = len(source.paths)
    # enough tasks for every core, at most _FILES_PER_TASK files each
    tasks = min(files, max(spark.sparkContext.defaultParallelism, -(-files // _FILES_PER_TASK)))
    paths = [os.path.abspath(p) for p in source.paths]  # tasks run in Spark's directories
    reader = FileReader(paths, parts, source.format, schema, to_arrow_schema(out))
    return spark.range(0, files, 1, numPartitions=tasks).mapInArrow(reader, out)


def _driver_scan(
    spark: SparkSession, source: BoundedSource, first_partition: int, where: str
) -> tuple[DataFrame, pl.Schema]:
    frames = [
        source.scan_partition(i)
        .collect()
        .with_columns(
            pl.lit(first_partition + i, dtype=pl.Int64).alias(PART),
            pl.int_range(pl.len(), dtype=pl.Int64).alias(SEQ),
        )
        for i in range(source.partition_count())
    ]
    schema = source.schema() or frames[0].drop(PART, SEQ).schema
    frame = pl.concat(
        [f.select(pl.col(n).cast(t) for n, t in _order_schema(schema).items()) for f in frames]
    )
    out = spark_schema(_order_schema(schema), where)
    return spark.createDataFrame(frame.to_arrow().cast(to_arrow_schema(out)), schema=out), schema
