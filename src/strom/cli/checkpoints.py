"""``strom checkpoints``: list a checkpoint directory's checkpoints and show one.

Reading only: it takes no lock, so it can watch the directory of a running ``strom run``.
Incomplete or damaged entries are skipped with a warning (a run ignores them the same way).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from strom.cli.output import console, table
from strom.runtime.checkpoints import CheckpointError, CheckpointStore, Manifest
from strom.runtime.checkpoints.layout import RUN_FILE, worker_store

__all__ = ["checkpoints"]

_DIR = click.argument(
    "directory", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR"
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def checkpoints() -> None:
    """List and show the checkpoints of a `strom run --checkpoint-dir` directory."""


@checkpoints.command("list")
@_DIR
@_JSON
def list_(directory: Path, as_json: bool) -> None:
    """List the complete checkpoints: id, time, size, state files, positions (of every worker,
    for a `strom run --workers` directory)."""
    stores = _stores(directory)
    found = [(worker, m) for worker, store in stores for m in store.checkpoints()]
    if as_json:
        click.echo(json.dumps([_with_worker(worker, m) for worker, m in found], indent=1))
        return
    workers = stores[0][0] is not None if stores else True
    rows = table(
        *(["Worker"] if workers else []), "Id", "Time (UTC)", "Size", "States", "Pause",
        "Guarantee", "Committed", "Positions", numeric=("Worker", "Id", "Size", "States", "Pause"),
    )  # fmt: skip
    for worker, m in found:
        rows.add_row(
            *([] if worker is None else [str(worker)]),
            str(m.id),
            _time(m.wall_time_ms),
            _bytes(m.size),
            str(len(m.states)),
            f"{m.pause_us / 1000:.1f} ms",
            m.guarantee,
            "yes" if m.committed else "undecided",
            _positions(m),
        )
    out = console()
    if not found:
        out.print(f"no checkpoints in {directory}")
        return
    out.print(rows)


@checkpoints.command()
@_DIR
@click.argument("checkpoint_id", type=click.IntRange(min=1), required=False, metavar="[ID]")
@_JSON
def show(directory: Path, checkpoint_id: int | None, as_json: bool) -> None:
    """Show checkpoint ID (default: the latest): positions, states and their sizes."""
    if (directory / RUN_FILE).exists():
        raise click.ClickException(
            f"{directory} holds a multi-worker run's checkpoints: show one worker's, "
            f"e.g. {directory / 'worker-0'}"
        )
    store = CheckpointStore(directory)
    try:
        manifest = store.latest() if checkpoint_id is None else store.get(checkpoint_id)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    if manifest is None:
        raise click.ClickException(f"no checkpoints in {directory}")
    if as_json:
        click.echo(json.dumps(manifest.to_json(), indent=1))
        return
    out = console()
    decided = "yes" if manifest.committed else f"undecided (by sink {manifest.decider})"
    out.print(
        f"Checkpoint {manifest.id}  Time: {_time(manifest.wall_time_ms)}  "
        f"Size: {_bytes(manifest.size)}  Pause: {manifest.pause_us / 1000:.1f} ms  "
        f"Guarantee: {manifest.guarantee}  Committed: {decided}"
    )
    out.print(f"Path: {manifest.path}")
    out.print()
    positions = table("Source", "Partition", "Position", numeric=("Partition",))
    for name, parts in manifest.positions.items():
        for index, position in enumerate(parts):
            positions.add_row(name, str(index), json.dumps(position))
    out.print(positions)
    out.print()
    states = table("Operator", "File", "Size", "Sha256", numeric=("Size",))
    for s in manifest.states:
        states.add_row(s.operator, s.file, _bytes(s.size), s.sha256[:16])
    out.print(states)


def _stores(directory: Path) -> list[tuple[int | None, CheckpointStore]]:
    """The directory's store, or each worker's (``worker-<i>/``) of a multi-worker run's."""
    if not (directory / RUN_FILE).exists():
        return [(None, CheckpointStore(directory))]
    workers = sorted(
        int(p.name.removeprefix("worker-"))
        for p in directory.glob("worker-*")
        if p.name.removeprefix("worker-").isdigit()
    )
    return [(i, worker_store(directory, i)) for i in workers]


def _with_worker(worker: int | None, manifest: Manifest) -> dict[str, object]:
    body: dict[str, object] = {} if worker is None else {"worker": worker}
    return {**body, **manifest.to_json()}


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def _positions(m: Manifest) -> str:
    """Each source's positions, compact: ``source: {..} {..}``."""
    return "  ".join(
        f"{name}: " + " ".join(json.dumps(p, separators=(",", ":")) for p in parts)
        for name, parts in m.positions.items()
    )
