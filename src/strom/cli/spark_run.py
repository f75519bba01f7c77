"""``strom run FILE --engine spark``: the pipeline's plan run as Spark jobs.

Kept apart from :mod:`strom.cli.run` so that pyspark (the ``spark`` extra) is imported only
when this engine is chosen; without it the command fails with the ``pip install`` to run.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from strom.pipeline import PlanError
from strom.pipeline.stream import Pipeline


def run_on_spark(pipeline: Pipeline, path: Path, master: str, progress: bool) -> None:
    """Validate and lower the plan, run every sink on a session on ``master``, and report."""
    try:
        from strom.spark import run_spark, spark_session
        from strom.spark.progress import SparkProgress
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        plan = pipeline.plan()
    except PlanError as exc:
        raise click.ClickException(f"{path}: invalid pipeline: {exc}") from exc
    started = time.monotonic()
    click.echo(f"starting Spark on {master} ...", err=True)
    try:
        spark = spark_session(master, app_name=f"strom {path.stem}")
    except Exception as exc:  # no Java, a bad --master, an unreachable cluster
        raise click.ClickException(
            f"starting Spark on {master} failed: {type(exc).__name__}: {exc}"
        ) from exc
    ready = time.monotonic()
    click.echo(
        f"running {path} on Spark {spark.version} ({len(plan.sources())} source(s), "
        f"{len(plan.sinks)} sink(s))",
        err=True,
    )
    try:
        with SparkProgress(spark, enabled=progress) as tracker:
            lowering = run_spark(plan, spark)
    except PlanError as exc:
        raise click.ClickException(f"{path}: not supported on Spark: {exc}") from exc
    except Exception as exc:
        raise click.ClickException(f"the pipeline failed: {type(exc).__name__}: {exc}") from exc
    done = time.monotonic()
    for line in lowering.native:
        click.echo(f"  {line}", err=True)
    click.echo(
        f"every sink written: {tracker.tasks_done} task(s), {tracker.tasks_failed} failed "
        f"attempt(s) retried; {done - ready:.1f} s (+{ready - started:.1f} s session start)",
        err=True,
    )
