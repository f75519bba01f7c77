"""``run_spark``: run a plan's sinks as Spark jobs.

Each sink is one Spark action over its lowered DataFrame:

- a :class:`~strom.connectors.FileSink` is written by Spark's own writers, in parallel, into its
  directory (``append``): Parquet as ``part-*.parquet`` files, NDJSON as ``part-*.json`` files
  (null fields written, not dropped); Spark's commit protocol publishes a job's files together
  when it succeeds (a failed job leaves none), with a ``_SUCCESS`` marker;
- any other sink (memory, SQL, Kafka, console …) gets the result collected to the driver as
  Arrow, cast to the node's Polars schema, in one ``write`` between ``open`` and ``close`` (as
  the bounded runner does); window results in the bounded runner's order (window end, start,
  keys). Fine for results that fit the driver, which is what such sinks hold anyway.

Spark retries a failed task (``spark.task.maxFailures``; in local mode ``local[N,F]``) by
recomputing it from its lineage: the source files and the steps after them, so the result is
the same as a run without the failure.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from strom.connectors.files import FileSink
from strom.engine.constants import WINDOW_END, WINDOW_START
from strom.pipeline.plan import Plan, WindowAggNode
from strom.pipeline.stream import Pipeline
from strom.spark.lower import Frame, Lowering
from strom.spark.session import configure, spark_session
from strom.spark.types import to_polars


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
    lowering = Lowering(plan, spark)
    frames = [lowering.frame(sink.input).unordered() for sink in plan.sinks]
    for sink_node, frame in zip(plan.sinks, frames, strict=True):
        sink = sink_node.sink
        if isinstance(sink, FileSink):
            _write_files(sink, frame)
            continue
        result = to_polars(frame.df.toArrow(), frame.schema)
        if isinstance(sink_node.input, WindowAggNode):
            result = result.sort([WINDOW_END, WINDOW_START, *sink_node.input.keys])
        sink.open()
        try:
            if result.height:
                sink.write(result)
        finally:
            sink.close()
    return lowering


def _write_files(sink: FileSink, frame: Frame) -> None:
    writer = frame.df.write.mode("append")
    directory = str(sink.directory.absolute())  # the JVM's working directory is not ours
    if sink.format == "parquet":
        writer.parquet(directory)
    else:
        writer.option("ignoreNullFields", "false").json(directory)
