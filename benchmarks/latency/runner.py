"""The latency suite: strom and its peers run one stateless pipeline on one broker, in turn.

For each system: fresh input and output topics (``params.partitions`` partitions each) on a
strom broker of its own process, the engine in a process of its own (``strom run`` of
:mod:`benchmarks.latency.pipeline`; the peers' children in their own venvs), a paced producer
and a timing consumer in two more (:mod:`benchmarks.latency.load`). Warm-up events flow until the
first one comes out (the engine is up and has compiled what it compiles); then the engine sits
idle while its CPU time is read (busy polling shows there), then each rate runs for
``params.seconds``. A record's latency is the time the consumer receives it minus the time the
producer handed it to its client: two broker hops and the engine. The engine's CPU time is read
per phase too, so a latency won by spinning would show.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from benchmarks.latency.load import RECORD
from benchmarks.latency.stats import Phase, PhaseResult, summarize
from benchmarks.nexmark.peers._peers import BYTEWAX, QUIX
from benchmarks.nexmark.peers._venv import Venv, VenvSpec, ensure_venv
from benchmarks.systems import process_cpu_s, start_strom

__all__ = ["FULL", "QUICK", "TARGET_P50_MS", "TARGET_P99_MS", "SuiteParams", "run", "run_suite"]

Emit = Callable[[dict[str, Any]], None]
HERE = Path(__file__).parent
#: The issue's target for strom, end to end.
TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0


@dataclass(frozen=True)
class SuiteParams:
    rates: tuple[int, ...]
    """Events a second, one phase each, in this order."""
    seconds: float
    """Length of each phase."""
    idle_s: float
    """How long the engine's idle CPU is measured."""
    partitions: int = 3
    flush: str = "never"
    """The broker's ``--flush`` (``never``: Kafka's own default, the page cache)."""
    warm_up_timeout_s: float = 180.0
    drain_timeout_s: float = 30.0
    """The longest wait, after a phase is sent, for its records to come out."""


QUICK = SuiteParams(rates=(200, 2_000, 20_000), seconds=5.0, idle_s=5.0)
FULL = SuiteParams(rates=(200, 1_000, 5_000, 20_000), seconds=20.0, idle_s=10.0)


@dataclass(frozen=True)
class Engine:
    """One system's pipeline process: ``argv`` with ``{bootstrap}``, ``{input}``, ``{output}``
    and ``{work}`` filled in, and extra environment."""

    system: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    def command(self, bootstrap: str, topics: tuple[str, str], work: Path) -> list[str]:
        values = {"bootstrap": bootstrap, "input": topics[0], "output": topics[1]}
        return [a.format(work=work, **values) for a in self.argv]

    def environment(self, bootstrap: str, topics: tuple[str, str]) -> dict[str, str]:
        env = dict(os.environ, STROM_BOOTSTRAP=bootstrap)
        env |= {"LATENCY_INPUT": topics[0], "LATENCY_OUTPUT": topics[1]}
        return env | dict(self.env)


def strom_engine() -> Engine:
    argv = (sys.executable, "-m", "strom", "run", str(HERE / "pipeline.py"))
    return Engine(f"strom {version('strom')}", argv)


_PEERS: tuple[tuple[VenvSpec, str], ...] = ((QUIX, "quix_child.py"), (BYTEWAX, "bytewax_child.py"))


def peer_engine(spec: VenvSpec, child: str) -> Engine | str:
    """The peer's engine, creating its venv first if needed; the reason when it cannot run."""
    venv = ensure_venv(spec)
    if not isinstance(venv, Venv):
        return venv
    argv = (str(venv.python), str(HERE / "children" / child), "--bootstrap", "{bootstrap}",
            "--input", "{input}", "--output", "{output}", "--work-dir", "{work}")  # fmt: skip
    return Engine(f"{spec.name} {spec.version}", argv)


def run(quick: bool, emit: Emit, peers: bool = True) -> None:
    """Run the latency suite (``quick``: shorter phases); ``emit`` gets one dict per line."""
    run_suite(QUICK if quick else FULL, emit, with_peers=peers)


def run_suite(params: SuiteParams, emit: Emit, with_peers: bool = True) -> None:
    engines: list[Engine] = [strom_engine()]
    if with_peers:
        for spec, child in _PEERS:
            engine = peer_engine(spec, child)
            if isinstance(engine, str):
                emit({"benchmark": "latency", "system": spec.name, "skipped": engine})
            else:
                engines.append(engine)
    work = Path(tempfile.mkdtemp(prefix="strom-latency-"))
    try:
        with start_strom(params.flush) as broker:
            for n, engine in enumerate(engines):
                lines = _measure(engine, broker.bootstrap, params, work / f"e{n}", n)
                for line in lines:
                    emit(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _create_topics(bootstrap: str, names: tuple[str, ...], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in names])
    for future in futures.values():
        future.result(30)


class _Load:
    """The producer and consumer processes of one system's run."""

    def __init__(self, bootstrap: str, topics: tuple[str, str], work: Path) -> None:
        self.records = work / "received.bin"
        base = [sys.executable, "-m", "benchmarks.latency.load"]
        consume = ["consume", "--bootstrap", bootstrap, "--topic", topics[1]]
        self.consumer = subprocess.Popen(
            [*base, *consume, "--out", str(self.records)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.consumer.stdout is not None
        if self.consumer.stdout.readline().strip() != "ready":
            raise RuntimeError("the timing consumer did not start")
        self.producer = subprocess.Popen(
            [*base, "produce", "--bootstrap", bootstrap, "--topic", topics[0]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, phase: Phase) -> float:
        """Send ``phase`` (blocks until acknowledged); the seconds the producer took."""
        stdin, stdout = self.producer.stdin, self.producer.stdout
        assert stdin is not None and stdout is not None
        command = {"rate": phase.rate, "seconds": phase.seconds, "first_seq": phase.first_seq}
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        answer = stdout.readline().split()
        if len(answer) != 3 or answer[0] != "sent":
            raise RuntimeError(f"the producer failed (answered {answer})")
        return float(answer[2])

    def received(self) -> int:
        """Records the consumer has written so far (duplicates and warm-up included)."""
        try:
            return self.records.stat().st_size // RECORD.size
        except FileNotFoundError:
            return 0

    def results(self) -> tuple[np.ndarray[Any, np.dtype[np.int64]], ...]:
        data = np.fromfile(self.records, dtype="<i8") if self.records.exists() else np.empty(0)
        pairs = data[: len(data) // 2 * 2].reshape(-1, 2).astype(np.int64)
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    def close(self) -> None:
        if self.producer.stdin is not None:
            self.producer.stdin.close()
        _stop(self.producer)
        _stop(self.consumer)


def _stop(proc: subprocess.Popen[Any], grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``, to the process's whole session when it leads
    one (a peer's children included)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def _engine_process(
    engine: Engine, bootstrap: str, topics: tuple[str, str], work: Path, log: IO[bytes]
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        engine.command(bootstrap, topics, work),
        env=engine.environment(bootstrap, topics),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        _stop(proc)


@dataclass(frozen=True)
class _Measured:
    phase: Phase
    engine_cpu_s: float
    send_s: float
    """How long the producer took to send the phase (its achieved rate)."""


def _measure(
    engine: Engine, bootstrap: str, params: SuiteParams, work: Path, n: int
) -> list[dict[str, Any]]:
    """One system's run: its idle line, then one line per rate (or one ``failed`` line)."""
    work.mkdir(parents=True)
    topics = (f"latency-{n}-in", f"latency-{n}-out")
    head = {"benchmark": "latency", "system": engine.system}
    _create_topics(bootstrap, topics, params.partitions)
    load = _Load(bootstrap, topics, work)
    log_path = work / "engine.log"
    try:
        with (
            log_path.open("wb") as log,
            _engine_process(engine, bootstrap, topics, work, log) as proc,
        ):
            idle_cpu_s, measured = _phases(proc, load, params)
    except RuntimeError as exc:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return [head | {"failed": f"{exc} ({' | '.join(tail)})"}]
    finally:
        load.close()
    seqs, latencies = load.results()
    idle = {
        "benchmark": "latency.idle",
        "system": engine.system,
        "params": {"seconds": params.idle_s},
        "idle_cpu_s": round(idle_cpu_s, 3),
        "idle_cpu_pct": round(100 * idle_cpu_s / params.idle_s, 2),
    }
    lines = [idle]
    for m in measured:
        label = {"rate": m.phase.rate, "seconds": m.phase.seconds, "partitions": params.partitions}
        result = summarize(m.phase, seqs, latencies)
        lines.append(head | {"params": label} | _result_fields(result, m, engine.system))
    return lines


def _phases(
    proc: subprocess.Popen[bytes], load: _Load, params: SuiteParams
) -> tuple[float, list[_Measured]]:
    """Warm up, measure the idle engine's CPU, send every phase; (idle CPU s, phases)."""
    seq, expected = 1, 0
    deadline = time.monotonic() + params.warm_up_timeout_s
    while load.received() == 0:  # until the engine is up and passes records through
        if proc.poll() is not None:
            raise RuntimeError(f"the engine exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no record came through within {params.warm_up_timeout_s:g} s")
        warm = Phase(50, 1.0, seq)
        load.send(warm)
        seq, expected = warm.end_seq, expected + warm.expected
    warm = Phase(1_000, 2.0, seq)  # the engine's first batches of some size, untimed
    load.send(warm)
    seq, expected = warm.end_seq, expected + warm.expected
    drain(load, expected, params.drain_timeout_s)
    time.sleep(0.5)  # the last records' acknowledgements and commits settle
    cpu = process_cpu_s(proc.pid)
    time.sleep(params.idle_s)
    idle_cpu_s = process_cpu_s(proc.pid) - cpu
    measured: list[_Measured] = []
    for rate in params.rates:
        phase = Phase(rate, params.seconds, seq)
        seq, expected = phase.end_seq, expected + phase.expected
        cpu = process_cpu_s(proc.pid)
        send_s = load.send(phase)
        drain(load, expected, params.drain_timeout_s)
        measured.append(_Measured(phase, process_cpu_s(proc.pid) - cpu, send_s))
        if proc.poll() is not None:
            raise RuntimeError(f"the engine exited with {proc.returncode}")
    return idle_cpu_s, measured


class Received(Protocol):
    def received(self) -> int: ...


def drain(load: Received, expected: int, timeout_s: float, quiet_s: float = 3.0) -> None:
    """Wait until the consumer has ``expected`` records, or nothing came for ``quiet_s``, or
    ``timeout_s`` passed (what is missing then is reported as lost)."""
    deadline = time.monotonic() + timeout_s
    last, last_change = load.received(), time.monotonic()
    while load.received() < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        now = load.received()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return


def _result_fields(result: PhaseResult, m: _Measured, system: str) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    fields: dict[str, Any] = {
        "events": m.phase.events,
        "sent_per_s": round(m.phase.events / m.send_s) if m.send_s > 0 else None,
        "expected": m.phase.expected,
        "received": result.received,
        "duplicates": result.duplicates,
        "lost": result.lost,
        "p50_ms": ms(result.p50_ms),
        "p99_ms": ms(result.p99_ms),
        "max_ms": ms(result.max_ms),
        "engine_cpu_s": round(m.engine_cpu_s, 3),
    }
    if system.startswith("strom") and result.p50_ms is not None and result.p99_ms is not None:
        fields["meets_target"] = (
            result.p50_ms <= TARGET_P50_MS and result.p99_ms <= TARGET_P99_MS and not result.lost
        )
    return fields
