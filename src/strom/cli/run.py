"""``strom run pipeline.py``: run a pipeline file with the streaming executor.

The file is executed (``runpy``, with ``__name__ == "__strom_run__"``, its directory first on
``sys.path``) and must define a module-level ``pipeline`` (a :class:`strom.pipeline.Pipeline`)
or a ``build_pipeline()`` function returning one. The plan is validated before anything runs.

``--engine local`` runs a bounded pipeline on the local batch engine instead
(:mod:`strom.cli.run_local`: worker processes, task retry, bounded memory); ``--engine auto``,
the default, picks it for every pipeline it can run (every source a file) unless
``--checkpoint-dir``, ``--worker-index`` or ``--max-seconds`` ask for streaming, and says which
it picked. Otherwise every pipeline runs on the streaming executor: when every source ends
(bounded sources), the watermark reaches its maximum, every window fires and the run finishes —
the same results the bounded runner computes, with per-operator metrics. Otherwise it streams
until SIGINT/SIGTERM or ``--max-seconds``; then sinks and sources are closed (sinks flush),
windows still open are not emitted, and the metrics print.

``--checkpoint-dir DIR`` takes a checkpoint every ``--checkpoint-interval`` and a final one when
the input ends or the run is stopped (:mod:`strom.runtime.checkpoints`); a run that finds a
completed checkpoint in DIR resumes from it, with no flag. ``--guarantee exactly-once`` (the
default) refuses at-least-once sinks before anything runs; ``at-least-once`` accepts them.
With ``--workers``, each worker checkpoints itself into ``DIR/worker-<i>``
(:mod:`strom.runtime.checkpoints.layout`; exactly-once through one Kafka transaction per worker
and checkpoint, :mod:`strom.runtime.distributed.workers`), and a worker that dies is restarted
from its last checkpoint, up to ``--max-restarts`` times in all, while the others run on.

``--engine spark [--master local[2]]`` runs the plan as Spark jobs instead (``--progress none``
hides the stages' bars)
(:mod:`strom.cli.spark_run`, :mod:`strom.spark`): bounded sources only, no ``--workers`` or
checkpoints (Spark spreads the work and retries failed tasks itself).

``--workers N`` (N > 1) starts N worker processes (:mod:`strom.cli.supervisor`), each running
``--worker-index i`` of the same file (:mod:`strom.runtime.distributed.workers`): worker
``i`` reads the partitions ``p % N == i`` of every source, and every keyed operator reads its keys
from a repartition topic ``<app-id>-repartition-<n>`` on the Kafka cluster, so the results equal one
process's. ``--worker-index`` runs one worker alone: start one per machine, with the same
``--workers``, ``--app-id`` and ``--run-id``, to spread a pipeline over machines.
"""

from __future__ import annotations

import logging
import os
import re
import runpy
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import click
from rich.console import Console
from rich.table import Table

from strom.cli.run_local import local_options, pick_engine, run_local_engine
from strom.cli.signals import stop_on_signals
from strom.cli.supervisor import EXIT_NO_RESTART, supervise
from strom.connectors import KafkaSource
from strom.engine.contracts import Guarantee, Metrics
from strom.pipeline import Pipeline, Plan, PlanError
from strom.runtime import MAX_WATERMARK, MIN_WATERMARK, StreamingExecutor
from strom.runtime.checkpoints import (
    CheckpointedRun,
    CheckpointError,
    CheckpointStore,
    Recovered,
)
from strom.runtime.checkpoints.layout import check_single_process, run_identity, worker_store
from strom.runtime.distributed.plan_split import WorkerConfig, create_repartition_topics
from strom.runtime.distributed.workers import (
    Worker,
    WorkerCheckpoints,
    transaction_timeout_ms,
)

__all__ = ["run"]

log = logging.getLogger("strom.cli")

#: The module name a pipeline file runs under (so its ``if __name__ == "__main__"`` stays off).
RUN_NAME = "__strom_run__"
#: Set for the workers ``--workers N`` starts: the supervisor's pid (a worker stops if it dies).
SUPERVISOR_ENV = "STROM_SUPERVISOR_PID"


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
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes sharing the sources' partitions (re-keying goes through Kafka); "
    "with --engine local, its task processes (default: the cores).",
)
@click.option(
    "--worker-index",
    type=click.IntRange(min=0),
    default=None,
    help="Run only this worker of --workers (one per machine); needs --run-id.",
)
@click.option(
    "--run-id",
    default=None,
    help="Identifies one run across its workers (default: new for each run of --workers).",
)
@click.option(
    "--app-id",
    default=None,
    help="Names the consumer group and the repartition topics (default: the file's stem).",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Take checkpoints here, and resume from the latest one found.",
)
@click.option(
    "--checkpoint-interval",
    default="1s",
    show_default=True,
    metavar="DURATION",
    help="Time between checkpoints: 500ms, 1s, 2m (0: after every round).",
)
@click.option(
    "--guarantee",
    type=click.Choice(["exactly-once", "at-least-once"]),
    default="exactly-once",
    show_default=True,
    help="With --checkpoint-dir: exactly-once refuses at-least-once sinks at start.",
)
@click.option(
    "--keep-checkpoints",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="How many of the newest checkpoints are kept.",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="With --workers and --checkpoint-dir: restarts of failed workers (from their last "
    "checkpoints) before the run fails.",
)
@click.option(
    "--master",
    default="local[2]",
    show_default=True,
    help="With --engine spark: local[N], local[N,F] (F attempts per task), spark://..., yarn.",
)
@click.option(
    "--repartition-partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Partitions of new repartition topics (default: the most of any source, >= workers).",
)
@local_options
def run(
    pipeline_file: Path,
    bootstrap_server: str | None,
    max_seconds: float | None,
    workers: int | None,
    worker_index: int | None,
    run_id: str | None,
    app_id: str | None,
    checkpoint_dir: Path | None,
    checkpoint_interval: str,
    guarantee: Guarantee,
    keep_checkpoints: int,
    max_restarts: int,
    repartition_partitions: int | None,
    master: str,
    **local: Any,
) -> None:
    """Run the pipeline defined in FILE until its sources end or it is stopped."""
    if local["engine"] == "spark":
        if workers is not None or worker_index is not None or checkpoint_dir is not None:
            raise click.UsageError(
                "--engine spark takes neither --workers nor --checkpoint-dir: Spark spreads "
                "the work over its executors and retries failed tasks itself"
            )
        from strom.cli.spark_run import run_on_spark

        progress = local["progress"] != "none"
        run_on_spark(load_pipeline(pipeline_file), pipeline_file, master, progress)
        return
    if bootstrap_server is not None:
        os.environ["STROM_BOOTSTRAP"] = bootstrap_server
    loaded: Pipeline | None = None
    if local["engine"] == "auto":
        asked = [
            name
            for name, value in (
                ("--checkpoint-dir", checkpoint_dir),
                ("--worker-index", worker_index),
                ("--max-seconds", max_seconds),
            )
            if value is not None
        ]
        loaded = load_pipeline(pipeline_file)
        local["engine"], why = pick_engine(loaded, asked)
        click.echo(f"engine: {local['engine']} ({why})", err=True)
    if local["engine"] == "local":
        if checkpoint_dir is not None or worker_index is not None or max_seconds is not None:
            raise click.UsageError(
                "--engine local runs a bounded pipeline to its end, with task retry instead of "
                "checkpoints: --checkpoint-dir, --worker-index and --max-seconds do not apply"
            )
        run_local_engine(loaded or load_pipeline(pipeline_file), pipeline_file, workers, **local)
        return
    workers = workers or 1
    app = app_id or pipeline_file.stem
    interval_ms = parse_duration_ms(checkpoint_interval, "--checkpoint-interval")
    options = _CheckpointOptions(checkpoint_dir, interval_ms, guarantee, keep_checkpoints)
    if worker_index is not None or workers > 1:
        if worker_index is not None and worker_index >= workers:
            raise click.UsageError(f"--worker-index must be below --workers ({workers})")
        if worker_index is not None and run_id is None:
            raise click.UsageError("--worker-index needs --run-id (the same for every worker)")
        if checkpoint_dir is not None:
            if guarantee == "exactly-once":
                try:
                    transaction_timeout_ms(interval_ms)
                except ValueError as exc:
                    raise click.BadParameter(str(exc), param_hint="--checkpoint-interval") from exc
            try:
                run_id = run_identity(checkpoint_dir, workers=workers, app_id=app, run_id=run_id)
            except CheckpointError as exc:
                raise click.ClickException(str(exc)) from exc
        run_id = run_id or uuid.uuid4().hex[:12]
        config = WorkerConfig(
            worker_index or 0, workers, app, run_id, bootstrap_server, repartition_partitions
        )
        if worker_index is not None:
            _run_worker(pipeline_file, config, max_seconds, options)
        else:
            _run_workers(pipeline_file, config, max_seconds, options, max_restarts)
        return
    if checkpoint_dir is not None:
        try:
            check_single_process(checkpoint_dir)
        except CheckpointError as exc:
            raise click.ClickException(str(exc)) from exc
    plan, executor = _prepare(loaded or load_pipeline(pipeline_file), pipeline_file)
    partitions = sum(s.source.partition_count() for s in plan.sources())
    runner: _Runner = executor
    if checkpoint_dir is not None:
        runner = _checkpointed(executor, checkpoint_dir, interval_ms, guarantee, keep_checkpoints)
    click.echo(
        f"running {pipeline_file} ({len(plan.sources())} source(s), {partitions} partition(s), "
        f"{len(plan.sinks)} sink(s)); stop with Ctrl-C",
        err=True,
    )
    outcome = _drive(runner, max_seconds)
    click.echo(outcome, err=True)
    _print_metrics(runner.metrics())


@dataclass(frozen=True)
class _CheckpointOptions:
    """``--checkpoint-dir`` (None: no checkpoints) and the options that go with it."""

    path: Path | None
    interval_ms: int
    guarantee: Guarantee
    keep: int

    def arguments(self) -> list[str]:
        """The same options for a worker's command line."""
        if self.path is None:
            return []
        return ["--checkpoint-dir", str(self.path),
                "--checkpoint-interval", f"{self.interval_ms}ms",
                "--guarantee", self.guarantee, "--keep-checkpoints", str(self.keep)]  # fmt: skip


def _checkpointed(
    executor: StreamingExecutor, path: Path, interval_ms: int, guarantee: Guarantee, keep: int
) -> CheckpointedRun:
    """``executor`` run with checkpoints in ``path``, recovered from the latest one there
    (done here, so a refused sink or another pipeline's checkpoint fails before the run)."""
    try:
        run = CheckpointedRun(
            executor,
            CheckpointStore(path),
            interval_ms=interval_ms,
            guarantee=guarantee,
            keep=keep,
        )
    except CheckpointError as exc:  # a sink refused: nothing was opened
        raise click.ClickException(str(exc)) from exc
    _recover(path, run.start, run.close)
    return run


def _recover(path: Path, start: Callable[[], Recovered | None], close: Callable[[], None]) -> None:
    """Recover a checkpointed run from ``path`` (``start``) and say from what; if that fails,
    ``close`` the run and fail."""
    try:
        recovered = start()
    except Exception as exc:  # another pipeline's checkpoint, a damaged one, a refused seek
        close()
        message = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
        raise click.ClickException(f"recovering from {path} failed: {message}") from exc
    if recovered is None or recovered.checkpoint is None:
        click.echo(f"checkpoints in {path}: none to resume from, starting afresh", err=True)
    else:
        click.echo(f"resuming from checkpoint {recovered.checkpoint.id} in {path}", err=True)


class _NoRestart(click.ClickException):
    """A worker's failure before it ran, which a restart would repeat (see
    :data:`~strom.cli.supervisor.EXIT_NO_RESTART`)."""

    exit_code = EXIT_NO_RESTART


def parse_duration_ms(text: str, option: str) -> int:
    """``"500ms"``, ``"1s"``, ``"1.5s"``, ``"2m"``, ``"1h"`` or bare milliseconds as integer
    milliseconds (:class:`click.BadParameter` otherwise)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise click.BadParameter(
            f"{text!r} is not a duration (like 500ms, 1s, 2m, 1h)", param_hint=option
        )
    scale = {"ms": 1, None: 1, "s": 1_000, "m": 60_000, "h": 3_600_000}[match.group(2)]
    return round(float(match.group(1)) * scale)


class _Runner(Protocol):
    def step(self) -> bool: ...

    def close(self) -> None: ...

    def metrics(self) -> dict[str, Metrics]: ...


def _drive(runner: _Runner, max_seconds: float | None, parent: int | None = None) -> str:
    """Step ``runner`` until it ends, a signal arrives, time is up or the supervising process
    ``parent`` is gone (so a killed supervisor leaves no orphans); then close it."""
    outcome = "every source ended"
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    stop: list[str] = []
    try:
        with stop_on_signals(lambda sig: stop.append(f"{sig.name} received")):
            while not stop:
                if not runner.step():
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    stop.append(f"--max-seconds {max_seconds:g} reached")
                if parent is not None and os.getppid() != parent:
                    stop.append("the supervising strom run is gone")
    except Exception as exc:
        log.error("the pipeline failed", exc_info=True)
        try:
            runner.close()
        except Exception:
            log.error("closing after the failure failed too", exc_info=True)
        raise click.ClickException(f"the pipeline failed: {type(exc).__name__}: {exc}") from exc
    if stop:
        outcome = f"stopped: {stop[0]}"
    try:
        runner.close()
    except Exception as exc:
        log.error("closing the pipeline failed", exc_info=True)
        raise click.ClickException(f"closing failed: {type(exc).__name__}: {exc}") from exc
    return outcome


def _repartition_bootstrap(plan: Plan, explicit: str | None) -> str | None:
    """Where repartition topics live: ``--bootstrap-server``, else the first KafkaSource's
    cluster, else ``STROM_BOOTSTRAP``."""
    if explicit is not None:
        return explicit
    for node in plan.sources():
        if isinstance(node.source, KafkaSource):
            return node.source.bootstrap_servers
    return os.environ.get("STROM_BOOTSTRAP")


def _run_worker(
    path: Path, config: WorkerConfig, max_seconds: float | None, options: _CheckpointOptions
) -> None:
    pipeline = load_pipeline(path)
    checkpoints = None
    if options.path is not None:
        store = worker_store(options.path, config.index)
        checkpoints = WorkerCheckpoints(store, options.interval_ms, options.guarantee, options.keep)
    try:
        plan = pipeline.plan()
        bootstrap = _repartition_bootstrap(plan, config.bootstrap_servers)
        worker = Worker(plan, replace(config, bootstrap_servers=bootstrap), checkpoints=checkpoints)
    except (PlanError, CheckpointError) as exc:  # an invalid plan, a refused sink: for good
        raise _NoRestart(f"{path}: {exc}") from exc
    except Exception as exc:  # e.g. an unreachable cluster: a restart may succeed
        raise click.ClickException(f"{path}: {type(exc).__name__}: {exc}") from exc
    click.echo(
        f"worker {config.index} of {config.workers} running {path} (run {config.run_id}, "
        f"repartition topics: {', '.join(worker.topics) or 'none'})",
        err=True,
    )
    if checkpoints is not None:
        try:
            _recover(checkpoints.store.path, worker.start, worker.close)
        except click.ClickException as exc:
            if isinstance(exc.__cause__, CheckpointError):  # another pipeline's, a damaged one
                raise _NoRestart(exc.message) from exc
            raise
    supervisor = os.environ.get(SUPERVISOR_ENV)
    outcome = _drive(worker, max_seconds, int(supervisor) if supervisor else None)
    click.echo(outcome, err=True)
    _print_metrics(worker.metrics())


def _run_workers(
    path: Path,
    config: WorkerConfig,
    max_seconds: float | None,
    options: _CheckpointOptions,
    max_restarts: int,
) -> None:
    """Validate the plan and create its repartition topics here (so the workers do not race
    to), then supervise one ``strom run --worker-index i`` process per worker (restarting a
    failed one, with checkpoints)."""
    pipeline = load_pipeline(path)
    try:
        plan = pipeline.plan()
        bootstrap = _repartition_bootstrap(plan, config.bootstrap_servers)
        count = create_repartition_topics(plan, replace(config, bootstrap_servers=bootstrap))
    except PlanError as exc:
        raise click.ClickException(f"{path}: invalid pipeline: {exc}") from exc
    except Exception as exc:
        raise click.ClickException(f"{path}: {type(exc).__name__}: {exc}") from exc
    workers, app = config.workers, config.app_id
    base = [sys.executable, "-m", "strom", "run", str(path), "--workers", str(workers)]
    base += ["--run-id", config.run_id, "--app-id", app]
    if count:
        base += ["--repartition-partitions", str(count)]
    if bootstrap is not None:
        base += ["--bootstrap-server", bootstrap]
    base += options.arguments()  # --max-seconds is the supervisor's (restarts included)
    click.echo(
        f"running {path} with {workers} workers (run {config.run_id}); stop with Ctrl-C",
        err=True,
    )
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    try:
        restarts = max_restarts if options.path is not None else 0
        commands = [[*base, "--worker-index", str(i)] for i in range(workers)]
        outcome = supervise(commands, restarts=restarts, max_seconds=max_seconds)
    finally:
        del os.environ[SUPERVISOR_ENV]
    click.echo(outcome, err=True)


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


def _watermark(value: int | None) -> str:
    if value is None or value == MIN_WATERMARK:
        return "-"
    return "end" if value == MAX_WATERMARK else str(value)


_COLUMNS = ("rows in", "rows out", "late", "dead letters", "watermark", "state", "lag")


def _print_metrics(metrics: dict[str, Metrics]) -> None:
    """One row per component (operators, sources, sinks), from their :class:`Metrics`."""
    table = Table(title="operators")
    table.add_column("operator")
    for column in _COLUMNS:
        table.add_column(column, justify="right")
    table.add_column("detail")
    for name, m in metrics.items():
        table.add_row(
            f"{name} {m.label}" if m.label else name,
            str(m.rows_in),
            str(m.rows_out),
            str(m.late_rows),
            str(m.dead_letters),
            _watermark(m.watermark),
            "-" if m.state_size is None else str(m.state_size),
            "-" if m.lag is None else str(m.lag),
            " ".join(f"{k}={v}" for k, v in m.detail.items()),
        )
    Console(width=160).print(table)
