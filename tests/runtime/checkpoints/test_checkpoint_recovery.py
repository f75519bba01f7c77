"""Recovery from checkpoints, in real processes: ``strom run --checkpoint-dir`` killed with
``kill -9`` at random moments and at targeted points, restarted until its bounded input ends;
the committed output then equals a failure-free run's exactly (no duplicate, no gap, same order).

The pipeline (``ckpt_pipeline.py``) has a keyed tumbling window and a keyed process function
(state, event-time timers) over a seeded GeneratorSource, writing to two-phase file sinks
(``ckpt_sink.py``). A representative few kills by default, many more with ``--run-slow``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ckpt_sink import committed_rows

from strom.cli.run import load_pipeline
from strom.runtime import StreamingExecutor, run_streaming
from strom.runtime.checkpoints import CheckpointStore

PIPELINE = Path(__file__).with_name("ckpt_pipeline.py")
BATCHES = 200
SINKS = ("windows", "process", "table")


def _env(out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_")}
    return {**env, "CKPT_OUT": str(out), "CKPT_BATCHES": str(BATCHES), **extra}


def _outputs(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: committed_rows(out / name) for name in SINKS}


def _reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decider: bool) -> dict[str, Any]:
    """A plain run in this process: no checkpoints, one commit at the end."""
    out = tmp_path / "reference"
    for key, value in _env(out, **({"CKPT_DECIDER": "1"} if decider else {})).items():
        monkeypatch.setenv(key, value)
    executor = StreamingExecutor(load_pipeline(PIPELINE))
    while executor.step():
        pass
    executor.pre_commit(1)
    executor.commit(1)
    executor.close()
    outputs = _outputs(out)
    assert all(len(rows) > 20 for rows in outputs.values()), outputs
    return outputs


def _start(out: Path, chk: Path, interval: str, **extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "strom", "run", str(PIPELINE), "--checkpoint-dir", str(chk),
            "--checkpoint-interval", interval]  # fmt: skip
    return subprocess.Popen(
        argv, env=_env(out, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _ids(chk: Path) -> list[int]:
    if not chk.is_dir():
        return []
    return sorted(int(p.name[4:]) for p in chk.iterdir() if p.name.startswith("chk-"))


def _kill_after_progress(proc: subprocess.Popen[str], chk: Path, rng: random.Random) -> bool:
    """Once ``proc`` has completed a checkpoint of its own, wait a random moment more and
    ``kill -9`` it; False if it ended first."""
    before = max(_ids(chk), default=0)
    deadline = time.monotonic() + 120
    while max(_ids(chk), default=0) <= before:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "no checkpoint in 120 s"
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.2))
    if proc.poll() is not None:
        return False
    proc.kill()
    return True


def _chaos(tmp_path: Path, *, seed: int, kills: int, decider: bool) -> tuple[Path, int]:
    """Run to the end, killed ``kills`` times (random moments and targeted crash points)."""
    rng = random.Random(seed)
    out, chk = tmp_path / "out", tmp_path / "chk"
    points = ["pre_commit", "commit", "store"] + (["decided"] if decider else [])
    base = {"CKPT_DECIDER": "1"} if decider else {}
    for attempt in range(kills + 1):  # every attempt before the last one was killed
        interval = rng.choice(["0", "0", "10ms", "30ms"])
        crash: dict[str, str] = {}
        if attempt < kills and attempt % 2 == 1:  # every other kill at a targeted point
            point = points[(attempt // 2) % len(points)]
            crash = {"CKPT_CRASH": f"{point}:{rng.randrange(2, 6)}"}
        proc = _start(out, chk, interval, **base, **crash)
        if attempt < kills and not crash:
            _kill_after_progress(proc, chk, rng)
        _, err = proc.communicate(timeout=180)
        if proc.returncode == 0:
            assert "every source ended" in err, err
            return chk, attempt
        assert proc.returncode == -9, err
    raise AssertionError(f"still not finished after {kills} kills")


def _check_final_state(chk: Path, out: Path) -> None:
    store = CheckpointStore(chk)
    found = store.checkpoints()
    assert 1 <= len(found) <= 3  # --keep-checkpoints 3
    last = found[-1]
    assert last.positions == {"source0": [{"batch": BATCHES}] * 3}
    assert last.committed
    for name in SINKS:
        assert not list((out / name / "staged").iterdir()), f"{name}: a staged file was left"


@pytest.mark.parametrize("decider", [False, True], ids=["manifest-decides", "sink-decides"])
def test_killed_runs_resume_to_exactly_the_failure_free_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decider: bool
) -> None:
    reference = _reference(tmp_path, monkeypatch, decider)
    chk, killed = _chaos(tmp_path, seed=10 + decider, kills=6, decider=decider)
    assert killed >= 4  # random moments may miss a short run's end; targeted points do not
    assert _outputs(tmp_path / "out") == reference
    _check_final_state(chk, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_many_kills_resume_to_exactly_the_failure_free_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    decider = seed % 2 == 1
    reference = _reference(tmp_path, monkeypatch, decider)
    chk, killed = _chaos(tmp_path, seed=100 + seed, kills=30, decider=decider)
    assert killed >= 20
    assert _outputs(tmp_path / "out") == reference
    _check_final_state(chk, tmp_path / "out")


def test_a_finished_run_started_again_adds_nothing(tmp_path: Path) -> None:
    out, chk = tmp_path / "out", tmp_path / "chk"
    outputs = []
    for _ in range(2):
        proc = _start(out, chk, "50ms")
        err = proc.communicate(timeout=180)[1]
        assert proc.returncode == 0, err
        outputs.append(_outputs(out))
    assert "resuming from checkpoint" in err
    assert outputs[0] == outputs[1]


def test_a_changed_pipeline_is_refused_naming_the_change(tmp_path: Path) -> None:
    out, chk = tmp_path / "out", tmp_path / "chk"
    proc = _start(out, chk, "0")
    assert _kill_after_progress(proc, chk, random.Random(1))
    proc.communicate(timeout=60)
    changed = _start(out, chk, "0", CKPT_VARIANT="changed")
    _, err = changed.communicate(timeout=60)
    assert changed.returncode == 1
    assert "is of another pipeline: operator 2:WindowAgg: window.size_ms is 3000, was 2000" in err
    assert "give this one another checkpoint directory" in err


def test_run_streaming_with_checkpoints_equals_a_plain_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _reference(tmp_path, monkeypatch, decider=False)
    out = tmp_path / "python"
    monkeypatch.setenv("CKPT_OUT", str(out))
    run_streaming(load_pipeline(PIPELINE), checkpoint_dir=tmp_path / "chk",
                  checkpoint_interval=0, keep_checkpoints=2)  # fmt: skip
    assert _outputs(out) == reference
    assert [m.id for m in CheckpointStore(tmp_path / "chk").checkpoints()] == [
        BATCHES, BATCHES + 1  # a checkpoint after every round, and the final one
    ]  # fmt: skip
