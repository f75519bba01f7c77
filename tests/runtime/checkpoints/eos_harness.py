"""Helpers for the exactly-once tests: the input, ``strom run`` as a killable subprocess, and
what the outputs and the broker say afterwards.

The broker is a real ``strom broker`` subprocess (``tests/broker/broker_proc.py``); each
:class:`PipelineRun` is a real ``strom run eos_pipeline.py --checkpoint-dir ...`` process.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from eos_pipeline import GROUP, INPUT, PARTITIONS
from tests.broker.broker_proc import RawClient

STROM = str(Path(sys.executable).with_name("strom"))
PIPELINE = str(Path(__file__).with_name("eos_pipeline.py"))
OUTPUT_PARTITIONS = 2
OPEN_STATES = {"Ongoing", "PrepareCommit", "PrepareAbort"}


def create_topics(bootstrap: str, names: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(name, count, 1) for name, count in names.items()]
    for future in admin.create_topics(new).values():
        future.result(15)


def produce_input(bootstrap: str, per_partition: int, seed: int) -> int:
    """Seeded readings into ``eos-in``: each partition its own keys (``p<p>k<i>``), timestamps
    rising 25 ms a record with up to 800 ms of disorder (inside the pipeline's 1 s bound: no
    record is late, however the partitions interleave). Returns the record count."""
    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for p in range(PARTITIONS):
        for i in range(per_partition):
            row = {"ts": i * 25 + rng.randrange(800), "key": f"p{p}k{rng.randrange(6)}",
                   "v": rng.randrange(1_000)}  # fmt: skip
            producer.produce(INPUT, json.dumps(row).encode(), partition=p)
            producer.poll(0)
    assert producer.flush(30) == 0
    return PARTITIONS * per_partition


class PipelineRun:
    """One ``strom run`` of the pipeline named ``name`` (its output topic, transactional id),
    with checkpoints in ``workdir/name-ckpt`` and files in ``workdir/name-out``; output goes to
    ``workdir/name[-tag]-<n>.log`` (``tag`` tells apart two processes of one pipeline)."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        bootstrap: str,
        *,
        interval: str = "150ms",
        tag: str = "",
        workers: int = 1,
    ):
        self.workers = workers
        self.tag = f"-{tag}" if tag else ""
        self.workdir = workdir
        self.name = name
        self.bootstrap = bootstrap
        self.interval = interval
        self.checkpoint_dir = workdir / f"{name}-ckpt"
        self.out = workdir / f"{name}-out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log: Path | None = None

    def start(
        self,
        crash_at: str | None = None,
        checkpoint_dir: Path | None = None,
        stop_at: int | None = None,
        crash_once: Path | None = None,
    ) -> None:
        """``crash_at``: ``CKPT_CRASH`` (``point:n``); ``crash_once``: ``CKPT_CRASH_ONCE``;
        ``stop_at``: ``EOS_STOP_AT``."""
        env = {**os.environ, "EOS_NAME": self.name, "EOS_OUT": str(self.out)}
        for name in ("CKPT_CRASH", "CKPT_CRASH_ONCE", "EOS_STOP_AT"):
            env.pop(name, None)
        if crash_at is not None:
            env["CKPT_CRASH"] = crash_at
        if crash_once is not None:
            env["CKPT_CRASH_ONCE"] = str(crash_once)
        if stop_at is not None:
            env["EOS_STOP_AT"] = str(stop_at)
        self.log = self.workdir / f"{self.name}{self.tag}-{self.starts}.log"
        self.starts += 1
        args = [STROM, "run", PIPELINE, "--bootstrap-server", self.bootstrap,
                "--checkpoint-dir", str(checkpoint_dir or self.checkpoint_dir),
                "--checkpoint-interval", self.interval]  # fmt: skip
        if self.workers > 1:  # the supervisor restarts a killed worker (up to 1000 times)
            args += ["--workers", str(self.workers), "--app-id", self.name,
                     "--max-restarts", "1000"]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def wait_recovered(self, timeout: float = 60) -> bool:
        """Until it has recovered (True) or exited (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if "resuming from checkpoint" in text or "none to resume from" in text:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: no recovery within {timeout} s:\n{self.text()}")

    def last_committed(self) -> int:
        """The newest checkpoint id its Kafka transaction committed (0 if none); with workers,
        the sum over the workers (it grows with any worker's progress)."""
        dirs = [self.checkpoint_dir]
        if self.workers > 1:
            dirs = [self.checkpoint_dir / f"worker-{i}" for i in range(self.workers)]
        total = 0
        for path in dirs:
            marked = [int(d.name[4:]) for d in path.glob("chk-*")
                      if (d / "COMMITTED").exists()]  # fmt: skip
            total += max(marked, default=0)
        return total

    def worker_pids(self) -> list[int]:
        """The worker processes of a ``--workers`` run (its supervisor's children)."""
        if self.proc is None:
            return []
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill_worker(self, rng: random.Random) -> bool:
        """``kill -9`` one worker of a ``--workers`` run, picked by ``rng`` (False: none)."""
        pids = self.worker_pids()
        if not pids:
            return False
        try:
            os.kill(rng.choice(pids), signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def kill_all(self) -> None:
        """``kill -9`` the supervisor and every worker at once (a machine lost)."""
        pids = self.worker_pids()
        self.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def wait_progress(self, since: int, timeout: float = 60) -> bool:
        """Until a checkpoint after ``since`` is committed (True) or it exited (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.last_committed() > since:
                    return True
            except FileNotFoundError:  # a checkpoint being deleted
                pass
            if self.proc is not None and self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: no progress within {timeout} s:\n{self.text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def complete(self, timeout: float = 120) -> None:
        """Start it and let it run to the end of its input (exit 0)."""
        self.start()
        code = self.wait(timeout)
        assert code == 0, f"{self.name} exited with {code}:\n{self.text()}"


# -- what the outputs hold -------------------------------------------------------------------


def read_topic(bootstrap: str, topic: str, isolation: str = "read_committed") -> list[list[Any]]:
    """Every record value of ``topic`` (decoded JSON), per partition in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "isolation.level": isolation})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(OUTPUT_PARTITIONS)])
    out: list[list[Any]] = [[] for _ in range(OUTPUT_PARTITIONS)]
    at_end: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(at_end) < OUTPUT_PARTITIONS and time.monotonic() < deadline:
            for m in consumer.consume(1_000, timeout=0.2):
                error = m.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    at_end.add(m.partition() or 0)
                    continue
                at_end.discard(m.partition() or 0)
                out[m.partition() or 0].append(json.loads(m.value() or b"null"))
        assert len(at_end) == OUTPUT_PARTITIONS, f"{topic}: no end of partition within 60 s"
    finally:
        consumer.close()
    return out


def table_rows(run: PipelineRun) -> list[dict[str, Any]]:
    """The ``windows`` table's rows in insertion order (exactly-once: published rows only)."""
    with sqlite3.connect(run.out / "out.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM windows ORDER BY rowid")]


def file_rows(run: PipelineRun) -> list[dict[str, Any]]:
    """The published NDJSON files' rows, file by file (their names are numbered in order)."""
    rows = []
    for path in sorted((run.out / "running").glob("*.ndjson")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines())
    return rows


def by_key(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``rows`` grouped by their ``key``, each key's rows in their order."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[row["key"]].append(row)
    return dict(out)


def list_offsets(address: tuple[str, int], topic: str, isolation: int) -> list[int]:
    """ListOffsets latest of each output partition (isolation 1: the last stable offset)."""
    with RawClient(address) as client:
        body = client.request("ListOffsets", 4, {"replica_id": -1, "isolation_level": isolation,
            "topics": [{"name": topic, "partitions": [
                {"partition_index": p, "current_leader_epoch": -1, "timestamp": -1}
                for p in range(OUTPUT_PARTITIONS)]}]}, api_key=2)  # fmt: skip
    return [p["offset"] for p in body["topics"][0]["partitions"]]


def transactions(address: tuple[str, int]) -> dict[str, str]:
    """ListTransactions: every transactional id's state."""
    with RawClient(address) as client:
        body = client.request("ListTransactions", 0, {"state_filters": [],
                              "producer_id_filters": []}, api_key=66)  # fmt: skip
    return {t["transactional_id"]: t["transaction_state"] for t in body["transaction_states"]}


def group_offsets(bootstrap: str) -> list[int]:
    """The pipeline source group's committed offset of each input partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        found = consumer.committed([TopicPartition(INPUT, p) for p in range(PARTITIONS)], 10)
    finally:
        consumer.close()
    return [tp.offset for tp in found]
