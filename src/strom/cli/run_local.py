"""``strom run FILE --engine local``: a bounded pipeline on the local batch engine.

``--engine auto`` (the default) picks it for every pipeline it runs (:func:`pick_engine`).

Options: ``--workers N`` (default: the cores), ``--memory 4GiB`` (the process tree's budget),
``--max-task-attempts 4``, ``--on-bad-file fail|skip``, ``--progress auto|rich|plain|json|none``
(``auto``: a bar on a terminal, plain lines otherwise) and ``--work-dir`` (shuffle files and the
bad-file report; default a temporary directory, removed afterwards unless files were skipped).
Exit status 1 with a message naming the task and its files when a task fails on every attempt,
or naming the file and the reason for a bad file with ``--on-bad-file fail``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from strom.pipeline import Pipeline, PlanError

F = TypeVar("F", bound=Callable[..., Any])


def local_options(command: F) -> F:
    """The ``--engine`` option and the local engine's own options."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(["auto", "stream", "local", "spark"]),
            default="auto",
            show_default=True,
            help="auto: local for a pipeline the batch engine runs (every source a file), else "
            "stream; stream: the streaming executor; local: the batch engine (bounded "
            "pipelines); spark: the plan as Spark jobs (bounded sources; strom[spark]).",
        ),
        click.option(
            "--memory",
            default="4GiB",
            show_default=True,
            metavar="SIZE",
            help="--engine local: the memory (anonymous, see README) the driver and workers share.",
        ),
        click.option(
            "--max-task-attempts",
            type=click.IntRange(min=1),
            default=4,
            show_default=True,
            help="--engine local: attempts of a task before the run fails.",
        ),
        click.option(
            "--on-bad-file",
            type=click.Choice(["fail", "skip"]),
            default="fail",
            show_default=True,
            help="--engine local: fail the run on an unreadable input file, or skip it.",
        ),
        click.option(
            "--progress",
            type=click.Choice(["auto", "rich", "plain", "json", "none"]),
            default="auto",
            show_default=True,
            help="--engine local or spark: progress per stage (auto: a bar on a terminal).",
        ),
        click.option(
            "--work-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="--engine local: shuffle files and the bad-file report (default: temporary).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def pick_engine(pipeline: Pipeline, streaming_options: list[str]) -> tuple[str, str]:
    """``--engine auto``: ``("local", why)`` when the batch engine runs this pipeline (every
    source a file, every step one it lowers) and no option asks for streaming, else
    ``("stream", why)``."""
    if streaming_options:
        return "stream", f"{', '.join(streaming_options)} given"
    from strom.batch.planner import lower  # only the planner: no worker starts here

    try:
        lower(pipeline.plan())
    except PlanError as exc:
        return "stream", f"not for the batch engine: {exc}"
    return "local", "a bounded pipeline over files"


def run_local_engine(
    pipeline: Pipeline,
    path: Path,
    workers: int | None,
    *,
    engine: str,
    memory: str,
    max_task_attempts: int,
    on_bad_file: str,
    progress: str,
    work_dir: Path | None,
) -> None:
    # imported here: a streaming `strom run` does not load the batch engine
    from strom.batch import BadFileError, TaskFailed, run_local
    from strom.batch.memory import format_size, parse_size
    from strom.batch.progress import make_progress

    try:
        size = parse_size(memory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--memory") from exc
    reporter = make_progress(progress)  # type: ignore[arg-type]  # click.Choice checked it
    try:
        report = run_local(
            pipeline,
            workers=workers,
            memory=size,
            max_task_attempts=max_task_attempts,
            on_bad_file="skip" if on_bad_file == "skip" else "fail",
            progress=reporter,
            work_dir=work_dir,
        )
    except PlanError as exc:
        raise click.ClickException(f"{path}: invalid pipeline for --engine local: {exc}") from exc
    except (TaskFailed, BadFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = ", ".join(f"{n:,}" for n in report.rows_out)
    click.echo(
        f"done in {report.wall_s:.2f}s: {report.tasks} tasks on {report.workers} workers, "
        f"{report.retries} retries, rows written per sink: {rows}; peak memory (anonymous) of the "
        f"process tree {format_size(report.peak_resident)} (--memory {format_size(size)})",
        err=True,
    )
    for bad in report.bad_files:
        click.echo(f"skipped bad file {bad['file']}: {bad['reason']}", err=True)
    if report.bad_files:
        click.echo(f"bad-file report: {Path(report.work_dir) / 'bad_files.ndjson'}", err=True)
