"""The checkpoint directory of a multi-worker run (``strom run --workers N --checkpoint-dir``).

::

    DIR/
      run.json        {"run_id": ..., "workers": N, "app_id": ...}: written once, atomically
      worker-0/       worker 0's checkpoints (a CheckpointStore of its own)
      worker-1/       ...

Each worker checkpoints itself (:mod:`strom.runtime.distributed.workers`); ``run.json`` keeps
what every restart must reuse: the run id (the repartition records' ``strom-run`` header: a
restarted worker must read its upstream's records, and a reader skips other runs'), the worker
count and the app id (keys are placed by worker count; the app id names the topics and the
transactional ids). A single-process run's checkpoints and a multi-worker run's never share a
directory.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from strom._fs import fsync_path
from strom.runtime.checkpoints.store import CheckpointError, CheckpointStore

__all__ = ["RUN_FILE", "check_single_process", "run_identity", "worker_store"]

RUN_FILE = "run.json"


def worker_store(path: Path, index: int) -> CheckpointStore:
    """Worker ``index``'s checkpoints under ``path``."""
    return CheckpointStore(path / f"worker-{index}")


def run_identity(path: Path, *, workers: int, app_id: str, run_id: str | None) -> str:
    """The run id of the multi-worker run checkpointing into ``path``: the one ``run.json``
    holds, or ``run_id`` (default: a new one) written there if there is none yet.

    :class:`CheckpointError` if ``path`` holds a single-process run's checkpoints, or a run of
    another worker count or app id, or ``run_id`` differs from the stored one."""
    file = path / RUN_FILE
    if not file.exists():
        if CheckpointStore(path).highest_id():
            raise CheckpointError(
                f"{path} holds the checkpoints of a single-process run: run it without "
                "--workers, or give this run another checkpoint directory"
            )
        orphans = [p.name for p in path.glob("worker-*") if CheckpointStore(p).highest_id()]
        if orphans:  # a new run id would skip every record of the checkpointed run
            raise CheckpointError(
                f"{path} holds workers' checkpoints ({', '.join(sorted(orphans))}) but no "
                f"{RUN_FILE}, which names their run: restore it, or give this run another "
                "checkpoint directory"
            )
        path.mkdir(parents=True, exist_ok=True)
        body = {"run_id": run_id or uuid.uuid4().hex[:12], "workers": workers, "app_id": app_id}
        temporary = path / f".tmp-{RUN_FILE}-{os.getpid()}"
        with temporary.open("w") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:  # another worker may have written it meanwhile: the first one wins
            os.link(temporary, file)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
        fsync_path(path)  # the name survives a power cut
    try:
        stored = json.loads(file.read_text())
        stored_id, stored_workers, stored_app = (
            stored["run_id"],
            stored["workers"],
            stored["app_id"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{file} is not a strom run file: {exc}") from exc
    if stored_workers != workers:
        raise CheckpointError(
            f"the checkpoints in {path} are of a run with --workers {stored_workers}, not "
            f"{workers} (each key's state lives in the worker its hash picks): run with "
            f"--workers {stored_workers}, or give this run another checkpoint directory"
        )
    if stored_app != app_id:
        raise CheckpointError(
            f"the checkpoints in {path} are of app id {stored_app!r}, not {app_id!r}"
        )
    if run_id is not None and run_id != stored_id:
        raise CheckpointError(
            f"the checkpoints in {path} are of run {stored_id!r}, not --run-id {run_id!r}"
        )
    return str(stored_id)


def check_single_process(path: Path) -> None:
    """:class:`CheckpointError` if ``path`` holds a multi-worker run's checkpoints."""
    file = path / RUN_FILE
    if file.exists():
        raise CheckpointError(
            f"{path} holds the checkpoints of a run with --workers ({file}): run it with its "
            "--workers, or give this run another checkpoint directory"
        )
