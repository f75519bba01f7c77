"""A multi-worker run's checkpoint directory: its run file and what a restart must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from strom.runtime.checkpoints import CheckpointError
from strom.runtime.checkpoints.layout import (
    RUN_FILE,
    check_single_process,
    run_identity,
    worker_store,
)


def test_the_first_run_writes_its_identity_and_restarts_reuse_it(tmp_path: Path) -> None:
    chk = tmp_path / "chk"
    first = run_identity(chk, workers=2, app_id="app", run_id=None)
    assert len(first) == 12
    assert run_identity(chk, workers=2, app_id="app", run_id=None) == first
    assert run_identity(chk, workers=2, app_id="app", run_id=first) == first
    assert worker_store(chk, 1).path == chk / "worker-1"
    assert [p.name for p in chk.iterdir()] == [RUN_FILE]  # no temporary file left


def test_a_restart_must_match_the_run(tmp_path: Path) -> None:
    run_identity(tmp_path, workers=2, app_id="app", run_id="r1")
    with pytest.raises(CheckpointError, match="--workers 2, not 4"):
        run_identity(tmp_path, workers=4, app_id="app", run_id=None)
    with pytest.raises(CheckpointError, match="of app id 'app', not 'other'"):
        run_identity(tmp_path, workers=2, app_id="other", run_id=None)
    with pytest.raises(CheckpointError, match="of run 'r1', not --run-id 'r2'"):
        run_identity(tmp_path, workers=2, app_id="app", run_id="r2")
    with pytest.raises(CheckpointError, match="holds the checkpoints of a run with --workers"):
        check_single_process(tmp_path)


@pytest.mark.parametrize("body", ["", "{", "[1]", '{"run_id": "r"}', "\x00\xff"])
def test_a_damaged_run_file_is_an_error(tmp_path: Path, body: str) -> None:
    (tmp_path / RUN_FILE).write_text(body, errors="surrogateescape")
    with pytest.raises(CheckpointError, match="is not a strom run file"):
        run_identity(tmp_path, workers=2, app_id="app", run_id=None)


def test_worker_checkpoints_without_their_run_file_are_refused(tmp_path: Path) -> None:
    """A lost run file must not mint a new run id: the restored readers would skip every
    committed record of the checkpointed run."""
    (tmp_path / "worker-0" / "chk-000000000004").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"holds workers' checkpoints \(worker-0\) but no"):
        run_identity(tmp_path, workers=2, app_id="app", run_id=None)
    assert not (tmp_path / RUN_FILE).exists()
