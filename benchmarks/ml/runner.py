"""The ML benchmark: features + scoring in strom beside Quix Streams and Bytewax, one run.

One strom broker (a process of its own) serves every system in turn. First the model is trained
and registered (:func:`benchmarks.ml.data.train`); strom reads it from its model store, the
peers load the same ``model.skops``. Then, per system (each engine in a process of its own):

- **throughput**: a topic pre-filled with ``params.events`` seeded readings is read to its end
  offsets, the windows' features computed and every closed window scored, predictions written
  to an output topic. The engine reports its events, wall time and CPU time (user + system of
  its process, from the built dataflow to the end of input); the predictions are then read back
  and checked against the reference (Polars features, one ``predict_proba`` call): the same
  device-windows, once each, and the same scores.
- **latency**: the engine tails a fresh topic while a paced producer stamps each reading with the
  wall clock as its event time; each rate of ``params.rates`` runs for ``params.seconds``. A
  window's features are final at its end, so a prediction's latency is the wall time the timing
  consumer receives it minus its ``window_end``: the engine (windowing, scoring), two broker hops,
  and the wait for the next reading that moves event time past the window's end.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl

from benchmarks.latency.runner import _create_topics, _stop, drain
from benchmarks.latency.stats import percentile
from benchmarks.ml import data
from benchmarks.ml.load import RECORD, fill
from benchmarks.ml.peers import ml_peers
from benchmarks.nexmark.peers._child import run_child
from benchmarks.nexmark.peers._venv import Venv, ensure_venv
from benchmarks.systems import process_cpu_s, start_strom

__all__ = ["FULL", "QUICK", "TARGET_P99_MS", "TARGET_PER_CORE", "SuiteParams", "run", "run_suite"]

Emit = Callable[[dict[str, Any]], None]
HERE = Path(__file__).parent
#: The issue's targets: strom's events per CPU-second over each peer's, and its p99 at 5,000/s.
TARGET_PER_CORE = 10.0
TARGET_P99_MS = 50.0
TARGET_RATE = 5_000
#: Scores equal to this (absolute): the engines sum a window's readings in other orders.
SCORE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SuiteParams:
    events: int
    """Readings in the throughput topic."""
    rates: tuple[int, ...]
    """Readings a second, one latency phase each, in this order."""
    seconds: float
    """Length of each latency phase."""
    partitions: int = 3
    seed: int = 1
    child_timeout_s: float = 900.0
    warm_up_timeout_s: float = 180.0
    drain_timeout_s: float = 30.0


QUICK = SuiteParams(events=200_000, rates=(500, 5_000), seconds=10.0)
FULL = SuiteParams(events=1_000_000, rates=(500, 2_000, 5_000, 10_000), seconds=20.0)


@dataclass(frozen=True)
class Engine:
    """One system's pipeline: ``base`` then the topics, then ``extra`` (where ``{work}`` is the
    run's work directory), then ``--bounded --stats FILE`` for a throughput run."""

    system: str
    base: tuple[str, ...]
    extra: tuple[str, ...]
    """Where the model is (strom: the store; peers: the file), and the like."""

    def argv(
        self, bootstrap: str, topics: tuple[str, str], work: Path, stats: Path | None
    ) -> list[str]:
        out = [*self.base, "--bootstrap", bootstrap, "--input", topics[0], "--output", topics[1]]
        out += [a.format(work=work) for a in self.extra]
        return out + (["--bounded", "--stats", str(stats)] if stats is not None else [])


def _engines(store: Path, model_file: Path, with_peers: bool, emit: Emit) -> list[Engine]:
    strom = Engine(
        f"strom {version('strom')}",
        (sys.executable, "-m", "benchmarks.ml.worker"),
        ("--store", str(store)),
    )
    engines = [strom]
    if not with_peers:
        return engines
    for spec, child in ml_peers():
        venv = ensure_venv(spec)
        if not isinstance(venv, Venv):
            emit({"benchmark": "ml", "system": spec.name, "skipped": venv})
            continue
        script = (str(venv.python), str(HERE / "children" / child))
        engines.append(
            Engine(
                f"{spec.name.removesuffix('-ml')} {spec.version}",
                script,
                ("--model", str(model_file), "--work-dir", "{work}"),
            )
        )
    return engines


def run(quick: bool, emit: Emit, peers: bool = True) -> None:
    """Run the ML suite (``quick``: fewer events, two rates); ``emit`` gets one dict per line."""
    run_suite(QUICK if quick else FULL, emit, with_peers=peers)


def run_suite(params: SuiteParams, emit: Emit, with_peers: bool = True) -> None:
    work = Path(tempfile.mkdtemp(prefix="strom-ml-bench-"))
    try:
        store_dir = work / "models"
        _, model_file, model = data.train(store_dir)
        engines = _engines(store_dir, model_file, with_peers, emit)
        readings = data.events(params.events, params.seed)
        reference = data.reference_features(readings)
        reference = reference.with_columns(score=data.reference_scores(model, reference))
        with start_strom("never") as broker:
            topic = "ml-readings"
            _create_topics(broker.bootstrap, (topic,), params.partitions)
            fill(broker.bootstrap, topic, readings, params.partitions)
            for n, engine in enumerate(engines):
                emit(
                    _throughput(
                        engine, broker.bootstrap, topic, params, reference, work / f"t{n}", n
                    )
                )
            for n, engine in enumerate(engines):
                for line in _latency(engine, broker.bootstrap, params, work / f"l{n}", n):
                    emit(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- throughput ---------------------------------------------------------------------------


def read_predictions(bootstrap: str, topic: str) -> pl.DataFrame:
    """Every record of ``topic`` up to its end offsets, as ``device``, ``window_end``, ``score``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "ml-bench-check", "enable.auto.commit": False}
    )
    try:
        ends = {}
        for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        values: list[bytes] = []
        deadline = time.monotonic() + 120
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                value, offset = message.value(), message.offset()
                if message.error() is not None or value is None or offset is None:
                    continue
                values.append(value)
                if offset + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
    finally:
        consumer.close()
    schema = {"device": pl.String, "window_end": pl.Int64, "score": pl.Float64}
    if not values:
        return pl.DataFrame(schema=schema)
    return pl.read_ndjson(b"\n".join(values), schema=schema)


def check(predictions: pl.DataFrame, reference: pl.DataFrame) -> dict[str, Any]:
    """How ``predictions`` compare with ``reference`` (``device``, ``window_end``, ``score``):
    counts, device-windows predicted more than once, missing or unknown, the largest score
    difference, and ``checked`` (all the same, scores within :data:`SCORE_TOLERANCE`)."""
    keys = ["device", "window_end"]
    distinct = predictions.unique(keys, keep="first", maintain_order=True)
    joined = reference.select(*keys, expected=pl.col("score")).join(
        distinct, on=keys, how="full", coalesce=True
    )
    missing = joined.filter(pl.col("score").is_null()).height
    unknown = joined.filter(pl.col("expected").is_null()).height
    both = joined.drop_nulls(["score", "expected"])
    diff = float(np.abs(both["score"].to_numpy() - both["expected"].to_numpy()).max(initial=0.0))
    fields: dict[str, Any] = {
        "predictions": predictions.height,
        "expected": reference.height,
        "duplicates": predictions.height - distinct.height,
        "missing": missing,
        "unknown": unknown,
        "max_score_diff": diff,
    }
    fields["checked"] = bool(
        missing == 0
        and unknown == 0
        and both.height == reference.height
        and diff <= SCORE_TOLERANCE
    )
    return fields


def _throughput(
    engine: Engine,
    bootstrap: str,
    topic: str,
    params: SuiteParams,
    reference: pl.DataFrame,
    work: Path,
    n: int,
) -> dict[str, Any]:
    work.mkdir(parents=True)
    output = f"ml-predictions-{n}"
    _create_topics(bootstrap, (output,), params.partitions)
    head = {
        "benchmark": "ml.throughput",
        "system": engine.system,
        "params": {
            "events": params.events,
            "partitions": params.partitions,
            "window_ms": data.WINDOW_MS,
            "devices": data.DEVICES,
        },
    }
    stats_path = work / "stats.json"
    child = run_child(
        engine.argv(bootstrap, (topic, output), work, stats_path), work, params.child_timeout_s
    )
    if child.returncode is None:
        return head | {"failed": f"timeout after {params.child_timeout_s:g} s"}
    if child.returncode != 0 or not stats_path.exists():
        return head | {"failed": f"exit {child.returncode}: {child.stderr_tail}"}
    stats = json.loads(stats_path.read_text())
    cpu_s, wall_s, events = float(stats["cpu_s"]), float(stats["wall_s"]), int(stats["events"])
    result = check(read_predictions(bootstrap, output), reference)
    return (
        head
        | result
        | {
            "events": events,
            "wall_s": round(wall_s, 3),
            "cpu_s": round(cpu_s, 3),
            "process_cpu_s": round(child.cpu_s, 3),
            "events_per_s": round(events / wall_s) if wall_s > 0 else None,
            "events_per_core_s": round(events / cpu_s) if cpu_s > 0 else None,
        }
    )


# -- latency ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """What the producer reported for one phase."""

    rate: int
    seconds: float
    sent: int
    start_ms: int
    end_ms: int
    windows: frozenset[tuple[int, int]]


class _Load:
    """The paced producer and the timing consumer of one system's latency run."""

    def __init__(
        self, bootstrap: str, topics: tuple[str, str], partitions: int, work: Path
    ) -> None:
        self.records = work / "received.bin"
        base = [sys.executable, "-m", "benchmarks.ml.load"]
        self.consumer = subprocess.Popen(
            [
                *base,
                "consume",
                "--bootstrap",
                bootstrap,
                "--topic",
                topics[1],
                "--out",
                str(self.records),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.consumer.stdout is not None
        if self.consumer.stdout.readline().strip() != "ready":
            raise RuntimeError("the timing consumer did not start")
        self.producer = subprocess.Popen(
            [
                *base,
                "produce",
                "--bootstrap",
                bootstrap,
                "--topic",
                topics[0],
                "--partitions",
                str(partitions),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, rate: int, seconds: float) -> Sent:
        stdin, stdout = self.producer.stdin, self.producer.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps({"rate": rate, "seconds": seconds}) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError("the producer failed")
        answer = json.loads(line)
        windows = frozenset((int(d), int(w)) for d, w in answer["windows"])
        return Sent(rate, seconds, answer["sent"], answer["start_ms"], answer["end_ms"], windows)

    def received(self) -> int:
        try:
            return self.records.stat().st_size // RECORD.size
        except FileNotFoundError:
            return 0

    def results(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        raw = np.fromfile(self.records, dtype="<i8") if self.records.exists() else np.empty(0)
        return raw[: len(raw) // 3 * 3].reshape(-1, 3).astype(np.int64)

    def close(self) -> None:
        if self.producer.stdin is not None:
            self.producer.stdin.close()
        _stop(self.producer)
        _stop(self.consumer)


@contextlib.contextmanager
def _engine_process(argv: list[str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    try:
        yield proc
    finally:
        _stop(proc)


def summarize(
    phases: list[Sent], received: np.ndarray[Any, np.dtype[np.int64]]
) -> list[dict[str, Any]]:
    """Per phase: the device-windows whose end falls in it (after the previous phase's end, up
    to its own), how many of them were predicted, and their latencies (first arrival)."""
    first: dict[tuple[int, int], int] = {}
    for device, window_end, received_us in received.tolist():
        first.setdefault((device, window_end), received_us)
    produced = set().union(*(p.windows for p in phases)) if phases else set()
    out = []
    for k, phase in enumerate(phases):
        low = phases[k - 1].end_ms if k else -1
        mine = [w for w in produced if low < w[1] <= phase.end_ms]
        latencies = np.sort(
            np.array([(first[w] - w[1] * 1000) / 1000.0 for w in mine if w in first])
        )
        got = len(latencies)
        out.append(
            {
                "rate": phase.rate,
                "seconds": phase.seconds,
                "sent_per_s": round(phase.sent / max(1e-9, (phase.end_ms - phase.start_ms) / 1000)),
                "expected": len(mine),
                "window_ends": len({w[1] for w in mine}),
                "received": got,
                "lost": len(mine) - got,
                "p50_ms": round(percentile(latencies, 50), 2) if got else None,
                "p99_ms": round(percentile(latencies, 99), 2) if got else None,
                "max_ms": round(float(latencies[-1]), 2) if got else None,
            }
        )
    return out


def _latency(
    engine: Engine, bootstrap: str, params: SuiteParams, work: Path, n: int
) -> list[dict[str, Any]]:
    work.mkdir(parents=True)
    topics = (f"ml-live-{n}", f"ml-live-{n}-predictions")
    head = {"benchmark": "ml.latency", "system": engine.system}
    _create_topics(bootstrap, topics, params.partitions)
    load = _Load(bootstrap, topics, params.partitions, work)
    log_path = work / "engine.log"
    cpu: list[float] = []
    try:
        with (
            log_path.open("wb") as log,
            _engine_process(engine.argv(bootstrap, topics, work, None), log) as proc,
        ):
            deadline = time.monotonic() + params.warm_up_timeout_s
            warm: list[Sent] = []
            while load.received() == 0:  # the engine is up and scores closed windows
                if proc.poll() is not None:
                    raise RuntimeError(f"the engine exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no prediction within {params.warm_up_timeout_s:g} s")
                warm.append(load.send(200, 1.0))
            warm.append(load.send(1_000, 2.0))  # the engine's first batches of some size, untimed
            phases: list[Sent] = []
            for rate in params.rates:
                before = process_cpu_s(proc.pid)
                phases.append(load.send(rate, params.seconds))
                cpu.append(process_cpu_s(proc.pid) - before)
            # readings past the last phase's windows close them; then wait for every prediction
            warm.append(load.send(200, 3 * data.WINDOW_MS / 1000))
            expected = len(frozenset().union(*(p.windows for p in [*warm, *phases])))
            drain(load, expected, params.drain_timeout_s, quiet_s=5.0)
            if proc.poll() is not None:
                raise RuntimeError(f"the engine exited with {proc.returncode}")
    except RuntimeError as exc:
        tail_lines = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return [head | {"failed": f"{exc} ({' | '.join(tail_lines)})"}]
    finally:
        load.close()
    lines = []
    for fields, engine_cpu in zip(summarize(phases, load.results()), cpu, strict=True):
        line = (
            head
            | {
                "params": {
                    "rate": fields.pop("rate"),
                    "seconds": fields.pop("seconds"),
                    "partitions": params.partitions,
                }
            }
            | fields
        )
        line["engine_cpu_s"] = round(engine_cpu, 3)
        if engine.system.startswith("strom") and line["params"]["rate"] == TARGET_RATE:
            line["meets_target"] = bool(
                line["p99_ms"] is not None and line["p99_ms"] <= TARGET_P99_MS and line["lost"] == 0
            )
        lines.append(line)
    return lines
