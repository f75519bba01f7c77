"""``run_spark``: run a plan's sinks as Spark jobs.

Each sink is one Spark action over its lowered DataFrame:

- a :class:`~strom.connectors.FileSink` is written by Spark's own writers, in parallel, into its
  directory (``append``): Parquet as ``part-*.parquet`` files, NDJSON as ``part-*.json`` files
  (null fields written, not dropped); Spark's commit protocol publishes a job's files together
  when it succeeds (a failed job leaves none), with a ``_SUCCESS`` marker;
- any other sink (memory, SQL, Kafka, console …) gets the result collected to the driver as
  Arrow, cast to the node's Polars schema, in one ``write`` between ``open`` and ``close`` (as
  the bounded runner does). Fine for results that fit the driver, which is what such sinks
  hold anyway.

Both get rows in the bounded runner's order where it promises one and Spark knows it
(:attr:`~strom.spark.lower.Frame.order`: windows by window end, start and keys; keyed
aggregations by key; a sort's rows sorted; distinct in input order): collected results are
sorted on the driver, files by Spark before writing.

Spark retries a failed task (``spark.task.maxFailures``; in local mode ``local[N,F]``) by
recomputing it from its lineage: the source files and the steps after them, so the result is
the same as a run without the failure.
"""

from __future__ import annotations

import polars as pl
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from strom.connectors.files import FileSink
from strom.pipeline.plan import Plan
from strom.pipeline.stream import Pipeline
from strom.spark.arrow import ORDER
from strom.spark.lower import Frame, Lowering
from strom.spark.session import configure, spark_session
from strom.spark.types import to_polars
from strom.spark.windows import raise_overflow


def run_spark(
    pipeline: Pipeline | Plan, spark: SparkSession | None = None, *, master: str = "local[2]"
) -> Lowering:
    """Run every sink of ``pipeline`` on ``spark`` (default: :func:`spark_session` on
    ``master``); returns the lowering (which nodes ran natively, for reports).

    The whole plan is lowered before any job starts, so an unsupported node fails with a
    :class:`~strom.pipeline.validate.PlanError` naming it before anything is written.
    """
    plan = pipeline.plan() if isinstance(pipeline, Pipeline) else pipeline
    if spark is None:
        spark = spark_session(master)
    else:
        configure(spark)
    try:
        return _run(plan, spark)
    finally:  # the driver-side reads' connections end with the run
        for node in plan.sources():
            node.source.close()


def _run(plan: Plan, spark: SparkSession) -> Lowering:
    lowering = Lowering(plan, spark)
    frames = [lowering.frame(sink.input) for sink in plan.sinks]
    for sink_node, frame in zip(plan.sinks, frames, strict=True):
        sink = sink_node.sink
        if isinstance(sink, FileSink):
            with raise_overflow():
                _write_files(sink, frame)
            continue
        with raise_overflow():
            result = _collect(frame)
        sink.open()
        try:
            if result.height:
                sink.write(result)
        finally:
            sink.close()
    return lowering


def _collect(frame: Frame) -> pl.DataFrame:
    """``frame``'s rows on the driver, in its order (sorted here: the result is small)."""
    order = () if frame.sorted or not frame.order else frame.order
    extra = [c for c in ORDER if frame.ordered and any(k.column == c for k in order)]
    schema = pl.Schema({**frame.schema, **dict.fromkeys(extra, pl.Int64())})
    columns = [F.col(f"`{c}`") for c in schema]
    result = to_polars(frame.df.select(*columns).toArrow(), schema)
    if order:
        result = result.sort(
            [k.column for k in order],
            descending=[k.descending for k in order],
            nulls_last=[k.nulls_last for k in order],
            maintain_order=True,
        )
    return result.drop(extra)


def _write_files(sink: FileSink, frame: Frame) -> None:
    df = frame.df
    if frame.order and not frame.sorted:
        df = df.orderBy(*(k.spark() for k in frame.order))
    writer = df.drop(*ORDER).write.mode("append")
    directory = str(sink.directory.absolute())  # the JVM's working directory is not ours
    if sink.format == "parquet":
        writer.parquet(directory)
    else:
        writer.option("ignoreNullFields", "false").json(directory)
