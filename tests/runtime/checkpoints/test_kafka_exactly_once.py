"""Exactly-once end to end: a real ``strom broker``, real ``strom run`` processes, ``kill -9``.

The pipeline (``eos_pipeline.py``): a Kafka source of 3 partitions, a keyed tumbling window to
an exactly-once KafkaSink (the run's commit decider) and an exactly-once SQLiteSink, and a keyed
process function to an exactly-once FileSink, checkpoints every 150 ms, a bounded input. A
failure-free reference run gives the expected outputs. Then:

- **kills**: the run is killed with ``kill -9`` at random moments and at the checkpoint's
  targeted points (``CKPT_CRASH``: after the Kafka sink's flush, during the snapshot write, after
  the flush and write but before EndTxn, between the Kafka commit and the database's and
  files' commits), and the broker is killed with ``kill -9`` and restarted on its data directory and
  port; the run is restarted after each of its deaths until it reaches the end of its input;
- **workers**: the same with ``--workers 2`` (the keyed steps read repartition topics; each
  worker checkpoints itself, in one Kafka transaction per checkpoint): one worker killed (the
  supervisor restarts it, the other runs on), the whole run killed, a worker killed at each
  targeted point, the broker killed;
- **zombie**: run A stops itself (SIGSTOP) at a checkpoint with its transaction open, B starts
  with the same identity, A is resumed: A is fenced and exits with the error saying so.

Afterwards the read_committed topic, the SQLite table, the files and the source group's offsets are
the reference run's exactly (each key's rows in the same order, no row missing or repeated),
no transaction is left open and every output partition's last stable offset is its high
watermark. (Rows of different keys interleave by how the input partitions' batches arrive,
which differs between any two runs, failure-free or not; every key lives in one input
partition, so each key's sequence is determined.) ``--run-slow`` runs many more kills.
"""

from __future__ import annotations

import functools
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eos_harness import (
    OPEN_STATES,
    OUTPUT_PARTITIONS,
    PipelineRun,
    by_key,
    create_topics,
    file_rows,
    group_offsets,
    list_offsets,
    produce_input,
    read_topic,
    table_rows,
    transactions,
)
from eos_pipeline import PARTITIONS
from tests.broker.broker_proc import BrokerProcess, free_port, wait_until

SEED = 20_261_206
POINTS = ("pre_commit", "store", "written", "decided")  # see eos_pipeline.py


@dataclass
class Setup:
    broker: BrokerProcess
    workdir: Path
    records: int
    windows: list[list[Any]]
    table: list[dict[str, Any]]
    running: list[dict[str, Any]]


def _scale(request: pytest.FixtureRequest) -> int:
    return 4 if request.config.getoption("--run-slow") else 1


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Setup]:
    """A broker subprocess, the input, and the failure-free reference run's outputs."""
    workdir = tmp_path_factory.mktemp("eos")
    broker = BrokerProcess(workdir / "data", free_port(), workdir / "broker.log", flush="always")
    with broker:
        broker.start()
        names = ("ref", "chaos", "zombie", "workers")
        topics = {f"{n}-windows": OUTPUT_PARTITIONS for n in names}
        create_topics(broker.bootstrap_servers, {"eos-in": PARTITIONS, **topics})
        records = produce_input(broker.bootstrap_servers, 40_000 * _scale(request), SEED)
        reference = PipelineRun(workdir, "ref", broker.bootstrap_servers)
        reference.complete(timeout=600)
        windows = read_topic(broker.bootstrap_servers, "ref-windows")
        table, running = table_rows(reference), file_rows(reference)
        assert len(running) == records  # one row per element
        assert sum(len(p) for p in windows) == len(table) > 1_000
        yield Setup(broker, workdir, records, windows, table, running)


def _check_outputs(setup: Setup, run: PipelineRun) -> None:
    """``run``'s outputs are the reference's exactly; the broker has settled everything."""
    bootstrap, address = setup.broker.bootstrap_servers, setup.broker.address
    windows = read_topic(bootstrap, f"{run.name}-windows")
    for p in range(OUTPUT_PARTITIONS):
        assert len(windows[p]) == len(setup.windows[p]), f"partition {p}: count differs"
        assert by_key(windows[p]) == by_key(setup.windows[p]), f"partition {p} differs"
    table = table_rows(run)
    assert len(table) == len(setup.table)
    assert by_key(table) == by_key(setup.table)
    running = file_rows(run)
    assert len(running) == len(setup.running)
    assert by_key(running) == by_key(setup.running)
    open_txns = {t: s for t, s in transactions(address).items() if s in OPEN_STATES}
    assert not open_txns, f"transactions left open: {open_txns}"
    stable = list_offsets(address, f"{run.name}-windows", 1)
    assert stable == list_offsets(address, f"{run.name}-windows", 0), "LSO below the HW"
    per_partition = setup.records // PARTITIONS
    assert group_offsets(bootstrap) == [per_partition] * PARTITIONS


def test_kill_9_of_the_run_and_the_broker(setup: Setup, request: pytest.FixtureRequest) -> None:
    """>= 20 kills of the run (random and targeted) and >= 5 of the broker, then exact output."""
    rng = random.Random(SEED)
    scale = _scale(request)
    plan = ["random"] * 12 * scale + [f"{p}" for p in POINTS for _ in range(2 * scale)]
    plan += ["broker"] * 5 * scale
    rng.shuffle(plan)
    run = PipelineRun(setup.workdir, "chaos", setup.broker.bootstrap_servers)
    kills: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()  # what the run did in each broker outage
    broker_down_during_attempt = False
    while True:
        action = plan.pop() if plan else None
        crash = f"{action}:{rng.randint(1, 3)}" if action in POINTS else None
        run.start(crash_at=crash)
        if action == "broker" and run.wait_recovered():
            time.sleep(rng.uniform(0.1, 0.6))
            before = run.last_committed()
            setup.broker.kill()
            time.sleep(rng.uniform(0.05, 0.5))
            setup.broker.start()
            kills["broker"] += 1
            broker_down_during_attempt = True
            # the run rides the outage out (or fails, and is restarted): it commits again
            outcome = "survived" if run.wait_progress(before) else "failed"
            outcomes[outcome] += 1
            action = "random"  # and then kill the run too
        if action == "random" and run.wait_recovered():
            time.sleep(rng.uniform(0.05, 0.6))
            run.kill()
        code = run.wait(timeout=300)
        if code == 0:
            break
        if code == -signal.SIGKILL:
            kills[action or "unplanned"] += 1
        else:  # only an outage of the broker may fail the run (with a connector error)
            assert broker_down_during_attempt, f"the run failed by itself ({code}):\n{run.text()}"
        broker_down_during_attempt = False
        assert run.starts < 500, "the run does not reach the end of its input"
    assert not plan, f"the input ended before the kill plan did ({plan} left): make it longer"
    run_kills = sum(n for k, n in kills.items() if k != "broker")
    assert run_kills >= 20 * scale and kills["broker"] >= 5 * scale, kills
    assert all(kills[p] >= 1 for p in POINTS), kills
    print(f"kills: {dict(kills)}; the run in broker outages: {dict(outcomes)}; "
          f"{run.starts} starts")  # fmt: skip
    _check_outputs(setup, run)


def test_kill_9_of_workers_and_the_broker(setup: Setup, request: pytest.FixtureRequest) -> None:
    """The pipeline with ``--workers 2`` (its keyed steps read repartition topics, each worker
    checkpoints itself in one transaction): >= 20 kills (one worker, restarted by the
    supervisor while the other runs on; the whole run; a worker at each targeted point) and
    >= 5 of the broker, then exact output."""
    rng = random.Random(SEED + 2)
    scale = _scale(request)
    plan = ["worker"] * 12 * scale + ["all"] * 4 * scale + list(POINTS) * scale
    plan += ["broker"] * 5 * scale
    rng.shuffle(plan)
    bootstrap = setup.broker.bootstrap_servers
    run = PipelineRun(setup.workdir, "workers", bootstrap, workers=2)
    kills: Counter[str] = Counter()
    run.start()
    while plan:
        assert run.proc is not None
        if run.proc.poll() is not None:  # it failed by itself, or finished before the plan
            break
        action = plan.pop()
        run.wait_recovered()
        time.sleep(rng.uniform(0.2, 1.0))
        if action == "worker":
            kills["worker"] += run.kill_worker(rng)
        elif action == "all":
            run.kill_all()
            run.wait()
            kills["all"] += 1
            run.start()
        elif action == "broker":
            setup.broker.kill()
            time.sleep(rng.uniform(0.05, 0.5))
            setup.broker.start()
            kills["broker"] += 1
        else:  # one worker dies at the point, the supervisor restarts it
            run.kill_all()
            run.wait()
            once = setup.workdir / f"workers-crash-{run.starts}"
            run.start(crash_at=f"{action}:{rng.randint(1, 3)}", crash_once=once)
            crashed = functools.partial(_crashed, run, once)
            wait_until(crashed, 300, f"a worker to reach {action}")
            kills[action] += once.exists()
    while (code := run.wait(timeout=600)) != 0:  # the supervisor gave up: start again
        assert run.starts < 50, f"the run does not reach its end ({code}):\n{run.text()}"
        run.start()
    assert not plan, f"the input ended before the kill plan did ({plan} left): make it longer"
    run_kills = sum(n for k, n in kills.items() if k != "broker")
    assert run_kills >= 20 * scale and kills["broker"] >= 5 * scale, kills
    assert all(kills[p] >= 1 for p in POINTS), kills
    print(f"kills: {dict(kills)}; {run.starts} starts")
    _check_outputs(setup, run)


def _crashed(run: PipelineRun, marker: Path) -> bool:
    """A worker crashed (it made ``marker``), or the run ended."""
    return marker.exists() or (run.proc is not None and run.proc.poll() is not None)


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def test_zombie_is_fenced(setup: Setup) -> None:
    """A stops with checkpoint 3 written and its transaction open (before EndTxn); B, the same
    pipeline with the same transactional id, takes over; A resumed is fenced, exits with the
    error, and nothing it wrote becomes visible."""
    a = PipelineRun(setup.workdir, "zombie", setup.broker.bootstrap_servers, tag="a")
    a.start(stop_at=3)
    assert a.proc is not None
    wait_until(lambda: _stopped(a.proc.pid), 120, "run A to stop itself at checkpoint 3")

    # the same checkpoint directory is refused while A holds its lock (even stopped) ...
    b = PipelineRun(setup.workdir, "zombie", setup.broker.bootstrap_servers, tag="b")
    b.start()
    assert b.wait(timeout=120) != 0
    assert "is in use by another run" in b.text()
    # ... so B gets a copy of it, as a second host of a shared volume would see it
    copy = setup.workdir / "zombie-ckpt-b"
    shutil.copytree(a.checkpoint_dir, copy)
    b.start(checkpoint_dir=copy)
    assert b.wait_recovered()
    assert "resuming from checkpoint 2" in b.text()  # A's checkpoint 3 was never committed
    assert b.wait(timeout=600) == 0, b.text()

    a.kill(signal.SIGCONT)
    assert a.wait(timeout=120) != 0
    assert "fenced" in a.text(), a.text()
    _check_outputs(setup, b)
