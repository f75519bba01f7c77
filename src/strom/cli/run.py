"""``strom run pipeline.py``: run a pipeline file with the streaming executor.

The file is executed (``runpy``, with ``__name__ == "__strom_run__"``, its directory first on
``sys.path``) and must define a module-level ``pipeline`` (a :class:`strom.pipeline.Pipeline`)
or a ``build_pipeline()`` function returning one. The plan is validated before anything runs.

Every pipeline runs on the streaming executor: when every source ends (bounded sources), the
watermark reaches its maximum, every window fires and the run finishes — the same results the
bounded runner computes, with per-operator metrics. Otherwise it streams until SIGINT/SIGTERM or
``--max-seconds``; then sinks and sources are closed (sinks flush), windows still open are not
emitted (there are no checkpoints yet, so nothing is committed either), and the metrics print.
"""

from __future__ import annotations

import logging
import os
import runpy
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from strom.cli.signals import stop_on_signals
from strom.connectors import KafkaSource
from strom.pipeline import Pipeline, Plan, PlanError
from strom.runtime import MAX_WATERMARK, MIN_WATERMARK, OperatorMetrics, StreamingExecutor

__all__ = ["run"]

log = logging.getLogger("strom.cli")

#: The module name a pipeline file runs under (so its ``if __name__ == "__main__"`` stays off).
RUN_NAME = "__strom_run__"


@click.command()
@click.argument(
    "pipeline_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE"
)
@click.option(
    "--bootstrap-server",
    default=None,
    metavar="HOST:PORT",
    help="Exported to the file as STROM_BOOTSTRAP (the examples read it).",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop (cleanly) after this long.",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Only 1 for now.")
def run(
    pipeline_file: Path, bootstrap_server: str | None, max_seconds: float | None, workers: int
) -> None:
    """Run the pipeline defined in FILE until its sources end or it is stopped."""
    if workers != 1:
        raise click.UsageError(
            "--workers > 1 is not implemented yet: one process runs every partition "
            "(workers sharing a consumer group arrive with repartitioning)"
        )
    if bootstrap_server is not None:
        os.environ["STROM_BOOTSTRAP"] = bootstrap_server
    plan, executor = _prepare(load_pipeline(pipeline_file), pipeline_file)
    partitions = sum(s.source.partition_count() for s in plan.sources())
    click.echo(
        f"running {pipeline_file} ({len(plan.sources())} source(s), {partitions} partition(s), "
        f"{len(plan.sinks)} sink(s)); stop with Ctrl-C",
        err=True,
    )
    outcome = "every source ended"
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    stop: list[str] = []
    try:
        with stop_on_signals(lambda sig: stop.append(f"{sig.name} received")):
            while not stop:
                if not executor.step():
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    stop.append(f"--max-seconds {max_seconds:g} reached")
    except Exception as exc:
        log.error("the pipeline failed", exc_info=True)
        try:
            executor.close()
        except Exception:
            log.error("closing after the failure failed too", exc_info=True)
        raise click.ClickException(f"the pipeline failed: {type(exc).__name__}: {exc}") from exc
    if stop:
        outcome = f"stopped: {stop[0]}"
    try:
        executor.close()
    except Exception as exc:
        log.error("closing the pipeline failed", exc_info=True)
        raise click.ClickException(f"closing failed: {type(exc).__name__}: {exc}") from exc
    click.echo(outcome, err=True)
    _print_metrics(executor, plan)


def load_pipeline(path: Path) -> Pipeline:
    """Execute ``path`` and return its ``pipeline`` (or ``build_pipeline()``'s result)."""
    sys.path.insert(0, str(path.resolve().parent))
    try:
        namespace = runpy.run_path(str(path), run_name=RUN_NAME)
        candidate: object = namespace.get("pipeline")
        if candidate is None and callable(namespace.get("build_pipeline")):
            candidate = namespace["build_pipeline"]()
    except (Exception, SystemExit) as exc:  # the user's file: report any failure
        log.error("loading %s failed", path, exc_info=True)
        raise click.ClickException(f"{path}: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    if candidate is None:
        raise click.ClickException(
            f"{path} defines no pipeline: give it a module-level `pipeline = Pipeline()` "
            "(with sources and sinks) or a function `build_pipeline()` returning one"
        )
    if not isinstance(candidate, Pipeline):
        raise click.ClickException(
            f"{path}: `pipeline` is a {type(candidate).__name__}, not a strom.pipeline.Pipeline"
        )
    return candidate


def _prepare(pipeline: Pipeline, path: Path) -> tuple[Plan, StreamingExecutor]:
    """Validate the plan and build its executor; nothing runs yet."""
    try:
        plan = pipeline.plan()
        return plan, StreamingExecutor(plan)
    except PlanError as exc:
        raise click.ClickException(f"{path}: invalid pipeline: {exc}") from exc
    except Exception as exc:  # e.g. a source that cannot reach its cluster
        raise click.ClickException(f"{path}: {type(exc).__name__}: {exc}") from exc


def _watermark(value: int) -> str:
    if value == MIN_WATERMARK:
        return "-"
    return "end" if value == MAX_WATERMARK else str(value)


def _print_metrics(executor: StreamingExecutor, plan: Plan) -> None:
    console = Console(width=120)
    table = Table(title="operators")
    for column in ("operator", "records in", "records out", "late", "watermark", "state"):
        table.add_column(column, justify="left" if column == "operator" else "right")
    metrics: dict[str, OperatorMetrics] = executor.metrics()
    for name, m in metrics.items():
        table.add_row(
            name,
            str(m.records_in),
            str(m.records_out),
            str(m.late_records),
            _watermark(m.watermark),
            str(m.state_size),
        )
    console.print(table)
    kafka = [(n.name, n.source) for n in plan.sources() if isinstance(n.source, KafkaSource)]
    if not kafka:
        return
    sources = Table(title="kafka sources")
    for column in ("source", "topic", "records", "rows", "dead letters", "next offsets"):
        sources.add_column(column, justify="left" if column in ("source", "topic") else "right")
    for name, source in kafka:
        km = source.metrics()
        offsets = " ".join(f"{p}:{o}" for p, o in km.positions.items())
        sources.add_row(
            name, source.topic, str(km.records), str(km.rows), str(km.dead_letters), offsets
        )
    console.print(sources)
