"""The Nexmark suite: generate, load into a strom broker, run every query, check every output.

The broker runs as its own process; each query runs in a fresh worker process
(:mod:`benchmarks.nexmark.worker`), so ``cpu_s`` is that engine process's CPU during the run only
(not the broker's, not topic loading); one untimed run first fills the engine's JIT caches.
Every output is compared with DuckDB's answer over the same events
(:mod:`benchmarks.nexmark.reference`). Peers (``benchmarks.nexmark.peers``, when present) then
run the same queries against the same broker and files.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.nexmark.generator import Events, GeneratorParams, generate, max_auction_ms
from benchmarks.nexmark.load import produce_topics, write_files
from benchmarks.nexmark.queries import INPUTS, QUERIES, unavailable
from benchmarks.nexmark.reference import compare, expected
from benchmarks.systems import start_strom

__all__ = ["TARGETS", "SuiteParams", "run", "run_suite"]

Emit = Callable[[dict[str, Any]], None]
STROM_TIMEOUT_S = 1_800.0

# events per second per core of the engine's process, by query shape (the targets)
TARGETS: dict[str, int] = {"q0": 1_000_000, "q1": 1_000_000, "q2": 1_000_000}
TARGETS |= {"q5": 300_000, "q7": 300_000}


@dataclass(frozen=True)
class SuiteParams:
    events: int
    partitions: int = 4
    rate: int = 100_000
    seed: int = 42
    batch_records: int = 50_000
    timeout_s: float = 900.0
    """Per query and peer."""
    peer_budget_s: float | None = None
    """All peers' runs together (quick runs stay short); ``None``: no limit."""
    peer_queries: tuple[str, ...] | None = None
    """The queries the peers run (``None``: all of strom's)."""
    runs: int = 1
    """Timed runs of each strom query; the run with the median CPU time is reported (a
    sub-second run on a shared 2-core machine varies by +-20 %)."""

    def generator(self) -> GeneratorParams:
        return GeneratorParams(events=self.events, seed=self.seed, rate=self.rate)


# a quick run compares the peers on one stateless and one windowed query only
QUICK = SuiteParams(
    events=500_000, timeout_s=60.0, peer_budget_s=180.0, peer_queries=("q1", "q5"), runs=5
)
FULL = SuiteParams(events=10_000_000)


def run(
    quick: bool,
    emit: Emit,
    scale: float = 1.0,
    queries: Iterable[str] = QUERIES,
    peers: bool = True,
) -> None:
    """Run the Nexmark suite; ``emit`` receives one result dict per line.

    ``scale`` shrinks the event count (the tests run it tiny; those numbers mean nothing);
    ``peers=False`` runs strom alone.
    """
    base = QUICK if quick else FULL
    params = replace(base, events=max(1_000, int(base.events * scale)))
    run_suite(params, emit, tuple(queries), with_peers=peers)


def run_suite(
    params: SuiteParams,
    emit: Emit,
    queries: tuple[str, ...] = QUERIES,
    corrupt: Callable[[str, pl.DataFrame], pl.DataFrame] | None = None,
    with_peers: bool = True,
) -> None:
    """Like :func:`run` with explicit params. ``corrupt`` (tests only) alters each strom output
    before it is checked, to show that a wrong answer is reported as one."""
    started = time.perf_counter()
    events = generate(params.generator())
    generated_s = time.perf_counter() - started
    system = f"strom {version('strom')}"
    work = Path(tempfile.mkdtemp(prefix="strom-nexmark-"))
    peers = _peers(emit) if with_peers else []
    try:
        with start_strom("never") as broker:
            load_s = produce_topics(events, broker.bootstrap, params.partitions)
            emit(
                {
                    "benchmark": "nexmark.load",
                    "system": system,
                    "params": _label(params, None),
                    "generate_s": round(generated_s, 3),
                    "load_s": round(load_s, 3),
                    "events_loaded": events.total,
                }
            )
            references = {q: expected(q, events) for q in queries if unavailable(q) is None}
            # untimed: compiles whatever the engine JIT-compiles and caches on disk (numba
            # kernels of the Kafka fetch and JSON decode), so no query's figure carries it
            _strom_query("q2", params, broker.bootstrap, events, work, system)
            strom_rate: dict[str, float] = {}
            for query in queries:
                line = _strom_query(query, params, broker.bootstrap, events, work, system)
                if "correct" in line:
                    _check(line, query, references[query], work, corrupt)
                if line.get("events_per_core_s"):
                    strom_rate[query] = line["events_per_core_s"]
                emit(line)
            if peers:
                files = work / "events"
                write_files(events, files)
                chosen = params.peer_queries
                peer_queries = [q for q in queries if chosen is None or q in chosen]
                budget = Budget(params.peer_budget_s, len(peer_queries) * len(peers))
                for query in peer_queries:
                    for peer in peers:
                        line = _run_peer(peer, params, query, broker.bootstrap, files, budget)
                        _judge_peer(line, query, references.get(query), strom_rate)
                        emit(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _label(params: SuiteParams, query: str | None) -> dict[str, Any]:
    label: dict[str, Any] = {} if query is None else {"query": query}
    return label | {
        "events": params.events,
        "partitions": params.partitions,
        "rate": params.rate,
        "seed": params.seed,
    }


def _result(
    benchmark: str,
    system: str,
    params: dict[str, Any],
    events: int,
    wall_s: float,
    cpu_s: float | None,
    rows: int | None,
) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "system": system,
        "params": params,
        "events": events,
        "rows": rows,
        "wall_s": round(wall_s, 3),
        "cpu_s": None if cpu_s is None else round(cpu_s, 3),
        "events_per_s": round(events / wall_s) if wall_s else None,
        "events_per_core_s": round(events / cpu_s) if cpu_s else None,
        "p50_ms": None,
        "p99_ms": None,
    }


def _strom_query(
    query: str,
    params: SuiteParams,
    bootstrap: str,
    events: Events,
    work: Path,
    system: str,
) -> dict[str, Any]:
    label = _label(params, query) | {"batch_records": params.batch_records}
    head = {"benchmark": f"nexmark.{query}", "system": system, "params": label}
    reason = unavailable(query)
    if reason is not None:
        return head | {"na": reason}
    output = work / f"{query}.parquet"
    argv = [
        sys.executable,
        "-m",
        "benchmarks.nexmark.worker",
        query,
        "--bootstrap",
        bootstrap,
        "--output",
        str(output),
        "--batch-records",
        str(params.batch_records),
        "--max-auction-ms",
        str(max_auction_ms(params.generator())),
    ]
    runs: list[dict[str, Any]] = []
    for _ in range(max(1, params.runs)):
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=STROM_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return head | {"failed": f"timed out after {STROM_TIMEOUT_S:.0f} s"}
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-3:]
            return head | {"failed": f"worker exited with {done.returncode}: {' | '.join(last)}"}
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    stats = sorted(runs, key=lambda r: float(r["cpu_s"]))[len(runs) // 2]  # the median run
    expected_events = sum(events.frames()[kind].height for kind in INPUTS[query])
    line = _result(
        f"nexmark.{query}",
        system,
        label,
        stats["events"],
        stats["wall_s"],
        stats["cpu_s"],
        stats["rows"],
    )
    line["target_events_per_core_s"] = TARGETS.get(query)
    line["warm_up_cpu_s"] = round(stats.get("warm_up_cpu_s", 0.0), 3)
    line["runs"] = len(runs)
    line["cpu_s_runs"] = [round(float(r["cpu_s"]), 3) for r in runs]
    if len({r["events"] for r in runs}) > 1:
        line["correct"] = False
        line["mismatch"] = f"runs read different numbers of events: {[r['events'] for r in runs]}"
        return line
    if stats["events"] != expected_events:
        line["correct"] = False
        line["mismatch"] = f"read {stats['events']} events, expected {expected_events}"
    else:
        line["correct"] = None  # decided by _check
    return line


def _check(
    line: dict[str, Any],
    query: str,
    reference: pl.DataFrame,
    work: Path,
    corrupt: Callable[[str, pl.DataFrame], pl.DataFrame] | None,
) -> None:
    if line["correct"] is False:
        return
    output = pl.read_parquet(work / f"{query}.parquet")
    if corrupt is not None:
        output = corrupt(query, output)
    verdict = compare(query, output, reference)
    line["correct"] = verdict.correct
    if verdict.detail is not None:
        line["mismatch"] = verdict.detail


# -- peers ---------------------------------------------------------------------------------------


def _peers(emit: Emit) -> list[Any]:
    """The peers of ``benchmarks.nexmark.peers`` that report a version (others are skipped)."""
    try:
        module = importlib.import_module("benchmarks.nexmark.peers")
    except ImportError:
        return []
    available = getattr(module, "available_peers", None)
    if available is None:  # e.g. a namespace package still being written
        return []
    found = []
    for peer in available():
        try:
            peer_version = peer.version()
        except Exception as exc:
            peer_version, reason = None, f"version check failed: {exc}"
        else:
            explain = getattr(peer, "unavailable_reason", None)
            reason = (explain() if callable(explain) else None) or "not installed"
        if peer_version is None:
            emit({"benchmark": "nexmark", "system": peer.name, "skipped": reason})
        else:
            found.append(peer)
    return found


class Budget:
    """Seconds the peers may use in all (``None``: no limit), shared fairly: each of the
    ``runs`` gets an equal part of what is left, so time a fast run leaves passes on."""

    def __init__(self, seconds: float | None, runs: int) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.runs_left = runs

    def next_share(self) -> float | None:
        """The time the next run may take (call once per run)."""
        runs, self.runs_left = max(self.runs_left, 1), self.runs_left - 1
        return None if self.deadline is None else (self.deadline - time.monotonic()) / runs


def _run_peer(
    peer: Any,
    params: SuiteParams,
    query: str,
    bootstrap: str,
    files: Path,
    budget: Budget,
) -> dict[str, Any]:
    label = _label(params, query)
    head = {"benchmark": f"nexmark.{query}", "system": peer.name, "params": label}
    share = budget.next_share()
    if share is not None and share < 5:
        return head | {"skipped": "the quick run's time for peers is spent"}
    timeout = params.timeout_s if share is None else min(params.timeout_s, share)
    try:
        run = peer.run(query, bootstrap, files, timeout)
    except Exception as exc:
        return head | {"failed": f"{type(exc).__name__}: {exc}"}
    head["system"] = run.system
    if run.na_reason is not None:
        return head | {"na": run.na_reason}
    rows = None if run.output is None else run.output.height
    line = _result(f"nexmark.{query}", run.system, label, run.events, run.wall_s, run.cpu_s, rows)
    line["output"] = run.output
    return line


def _judge_peer(
    line: dict[str, Any],
    query: str,
    reference: pl.DataFrame | None,
    strom_rate: dict[str, float],
) -> None:
    """Check a peer's output like strom's, and add strom's per-core ratio over the peer's."""
    if "output" not in line:
        return
    output = line.pop("output")
    if reference is None:
        line["correct"] = None
    else:
        verdict = compare(query, output, reference)
        line["correct"] = verdict.correct
        if verdict.detail is not None:
            line["mismatch"] = verdict.detail
    peer_rate = line["events_per_core_s"]
    if query in strom_rate and peer_rate:
        line["ratio"] = round(strom_rate[query] / peer_rate, 2)
