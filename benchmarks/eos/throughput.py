"""Exactly-once over at-least-once throughput: Nexmark q0 and q5, Kafka → strom → Kafka.

Seeded Nexmark events are loaded into the ``nexmark-*`` topics of a strom broker process (as
:mod:`benchmarks.nexmark` does); each run is one :mod:`benchmarks.eos.worker` process reading
them (``bounded``, read_committed) into a fresh output topic through a ``KafkaSink``, in mode
``none`` (no checkpoints), ``alo`` (checkpoints, at-least-once sink) or ``eos`` (the same
checkpoints, transactional sink). ``events_per_core_s`` divides the events read by the worker's
own CPU seconds (the broker's are reported apart, as ``broker_cpu_s``).

The machine is shared and drifts, so runs are interleaved: each round runs the baseline, then
``alo`` and ``eos`` back to back for every interval, and the EOS/ALO ratio is taken per round
(adjacent runs) and reported as the median over rounds, next to the median of each figure.
Every run's output rows are checked against DuckDB's answer (their number) and, for ``eos``,
against what a read_committed consumer sees in the output topic.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks.eos.worker import Mode
from benchmarks.nexmark.generator import GeneratorParams, generate, max_auction_ms
from benchmarks.nexmark.load import produce_topics
from benchmarks.nexmark.reference import expected
from benchmarks.systems import RunningBroker, start_strom

__all__ = ["FULL", "QUICK", "TARGET_RATIO", "ThroughputParams", "run"]

Emit = Callable[[dict[str, Any]], None]
#: The issue's target: exactly-once keeps this share of at-least-once throughput at 1 s.
TARGET_RATIO = 0.9
RUN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ThroughputParams:
    events: int
    rounds: int
    queries: tuple[str, ...] = ("q0", "q5")
    intervals_ms: tuple[int, ...] = (100, 1_000, 5_000)
    partitions: int = 4
    rate: int = 100_000
    seed: int = 42
    warm_up: bool = True
    """One untimed run first (the OS's caches; numba's kernels are loaded in every run)."""
    batch_records: int = 10_000
    """Per partition poll (``KafkaSource``'s default): a round is then short enough for
    100 ms checkpoints to mean something (checkpoints are taken between rounds)."""

    def generator(self) -> GeneratorParams:
        return GeneratorParams(events=self.events, seed=self.seed, rate=self.rate)


QUICK = ThroughputParams(events=1_000_000, rounds=2)
FULL = ThroughputParams(events=4_000_000, rounds=3)


def run(params: ThroughputParams, emit: Emit) -> None:
    """Every query, ``params.rounds`` interleaved rounds; one line per run, then a summary line
    per query and interval (``benchmark`` ``eos.throughput``)."""
    events = generate(params.generator())
    work = Path(tempfile.mkdtemp(prefix="strom-eos-"))
    system = f"strom {version('strom')}"
    try:
        with start_strom("never") as broker:
            load_s = produce_topics(events, broker.bootstrap, params.partitions)
            emit({"benchmark": "eos.load", "system": system, "events_loaded": events.total,
                  "load_s": round(load_s, 3), "params": {"events": params.events}})  # fmt: skip
            configs: list[tuple[Mode, int]] = [("none", 0)]
            configs += [(m, i) for i in params.intervals_ms for m in ("alo", "eos")]
            counter = iter(range(1 << 30))
            for query in params.queries:
                rows = expected(query, events).height
                if params.warm_up:
                    _one(query, "none", 0, params, broker, work, next(counter), rows)
                runs: list[dict[str, Any]] = []
                for round_ in range(params.rounds):
                    for mode, interval in configs:
                        line = _one(
                            query, mode, interval, params, broker, work, next(counter), rows
                        )
                        line |= {"benchmark": "eos.run", "system": system, "round": round_}
                        emit(line)
                        runs.append(line)
                for summary in summarize(query, runs, params):
                    emit(summary | {"system": system})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one(
    query: str,
    mode: Mode,
    interval_ms: int,
    params: ThroughputParams,
    broker: RunningBroker,
    work: Path,
    n: int,
    expected_rows: int,
) -> dict[str, Any]:
    """One worker run into a fresh output topic (deleted afterwards)."""
    topic = f"eos-out-{n}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    # created ahead: an exactly-once sink's first checkpoint may come before its first record
    for future in admin.create_topics([NewTopic(topic, params.partitions, 1)]).values():
        future.result(30)
    checkpoints = work / f"chk-{n}"
    argv = [sys.executable, "-m", "benchmarks.eos.worker", query, "--bootstrap",
            broker.bootstrap, "--topic", topic, "--mode", mode, "--interval-ms",
            str(interval_ms), "--checkpoint-dir", str(checkpoints), "--batch-records",
            str(params.batch_records), "--max-auction-ms",
            str(max_auction_ms(params.generator()))]  # fmt: skip
    label = {"query": query, "mode": mode, "interval_ms": interval_ms or None,
             "events": params.events}  # fmt: skip
    broker_cpu = broker.cpu_s()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"params": label, "failed": f"timed out after {RUN_TIMEOUT_S:.0f} s"}
    broker_cpu = broker.cpu_s() - broker_cpu
    try:
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            return {"params": label, "failed": f"worker exited with {done.returncode}: {tail}"}
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        line: dict[str, Any] = {"params": label, **_figures(stats, broker_cpu)}
        visible = count_committed(broker.bootstrap, topic) if mode == "eos" else stats["rows"]
        line["correct"] = stats["rows"] == expected_rows == visible
        if not line["correct"]:
            line["mismatch"] = (f"wrote {stats['rows']} rows, {visible} visible, DuckDB has "
                                f"{expected_rows}")  # fmt: skip
        return line
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
        for future in admin.delete_topics([topic]).values():
            future.result(30)


def _figures(stats: dict[str, Any], broker_cpu_s: float) -> dict[str, Any]:
    wall, cpu = float(stats["wall_s"]), float(stats["cpu_s"])
    return {
        "events": stats["events"],
        "rows": stats["rows"],
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "broker_cpu_s": round(broker_cpu_s, 3),
        "events_per_s": round(stats["events"] / wall) if wall else None,
        "events_per_core_s": round(stats["events"] / cpu) if cpu else None,
        "checkpoints": stats["checkpoints"],
        "pause_ms_total": stats["pause_ms_total"],
        "pause_ms_max": stats["pause_ms_max"],
        "duration_ms_max": stats["duration_ms_max"],
    }


def count_committed(bootstrap: str, topic: str, timeout_s: float = 60.0) -> int:
    """Records a read_committed consumer reads from every partition of ``topic``, up to its
    last stable offset (which must reach the end: no transaction may be left open)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "eos-bench-check",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        count, at_end = 0, set[int]()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                error = message.error()
                if error is None:
                    count += 1
                elif error.code() == KafkaError._PARTITION_EOF:  # caught up with the LSO
                    at_end.add(int(message.partition() or 0))
        if len(at_end) < len(partitions):
            raise RuntimeError(f"{topic}: read_committed did not reach the end of every partition")
        return count
    finally:
        consumer.close()


def summarize(
    query: str, runs: list[dict[str, Any]], params: ThroughputParams
) -> list[dict[str, Any]]:
    """Per interval: the median figures of ``alo`` and ``eos`` runs and the median of the
    per-round EOS/ALO ratios (events per core-second, and per wall second)."""
    ok = [r for r in runs if "failed" not in r]

    def of(mode: str, interval: int | None) -> dict[int, dict[str, Any]]:
        return {
            r["round"]: r
            for r in ok
            if r["params"]["mode"] == mode and r["params"]["interval_ms"] == interval
        }

    def median(lines: list[dict[str, Any]], key: str) -> float | None:
        values = [float(x[key]) for x in lines if x.get(key)]
        return round(statistics.median(values), 3) if values else None

    base = list(of("none", None).values())
    out = []
    for interval in params.intervals_ms:
        alo, eos = of("alo", interval), of("eos", interval)
        pairs = [(alo[r], eos[r]) for r in sorted(alo.keys() & eos.keys())]
        core = [e["events_per_core_s"] / a["events_per_core_s"] for a, e in pairs]
        wall = [e["events_per_s"] / a["events_per_s"] for a, e in pairs]
        ratio = round(statistics.median(core), 3) if core else None
        out.append(
            {
                "benchmark": "eos.throughput",
                "params": {"query": query, "interval_ms": interval, "rounds": len(pairs)},
                "none_events_per_core_s": median(base, "events_per_core_s"),
                "alo_events_per_core_s": median(list(alo.values()), "events_per_core_s"),
                "eos_events_per_core_s": median(list(eos.values()), "events_per_core_s"),
                "alo_events_per_s": median(list(alo.values()), "events_per_s"),
                "eos_events_per_s": median(list(eos.values()), "events_per_s"),
                "eos_over_alo_per_core": ratio,
                "eos_over_alo_per_core_rounds": [round(x, 3) for x in core],
                "eos_over_alo_wall": round(statistics.median(wall), 3) if wall else None,
                "alo_over_none_per_core": _over(
                    median(list(alo.values()), "events_per_core_s"),
                    median(base, "events_per_core_s"),
                ),
                "eos_checkpoints": median(list(eos.values()), "checkpoints"),
                "eos_pause_ms_max": median(list(eos.values()), "pause_ms_max"),
                "target": TARGET_RATIO if interval == 1_000 else None,
                "meets_target": None
                if interval != 1_000 or ratio is None
                else ratio >= TARGET_RATIO,
                "correct": all(r.get("correct") for r in ok if r["params"]["query"] == query)
                and len(ok) == len(runs),
            }
        )
    return out


def _over(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None
