"""The three peers: Quix Streams and Bytewax on the strom broker, PyFlink on the event files."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from benchmarks.nexmark.peers._child import run_child
from benchmarks.nexmark.peers._venv import Venv, VenvSpec, ensure_venv

__all__ = ["OUTPUT_SCHEMAS", "Peer", "PeerRun", "all_peers"]

CHILDREN = Path(__file__).parent / "children"

_BID = {
    "auction": pl.Int64,
    "bidder": pl.Int64,
    "price": pl.Int64,
    "channel": pl.String,
    "url": pl.String,
    "dateTime": pl.Int64,
    "extra": pl.String,
}
OUTPUT_SCHEMAS: dict[str, dict[str, type[pl.DataType]]] = {
    "q0": _BID,
    "q1": {
        "auction": pl.Int64,
        "bidder": pl.Int64,
        "price": pl.Float64,
        "dateTime": pl.Int64,
        "extra": pl.String,
    },
    "q2": {"auction": pl.Int64, "price": pl.Int64},
    "q3": {"name": pl.String, "city": pl.String, "state": pl.String, "id": pl.Int64},
    "q4": {"category": pl.Int64, "avg_final": pl.Float64},
    "q5": {"auction": pl.Int64, "num": pl.Int64, "window_start": pl.Int64, "window_end": pl.Int64},
    "q7": {
        "auction": pl.Int64,
        "price": pl.Int64,
        "bidder": pl.Int64,
        "dateTime": pl.Int64,
        "extra": pl.String,
        "window_end": pl.Int64,
    },
    "q8": {"id": pl.Int64, "name": pl.String, "window_start": pl.Int64},
}


@dataclass
class PeerRun:
    """One query on one peer. ``wall_s``/``cpu_s`` cover the query alone (from the moment the
    peer may read its first record to its last result); the peer's start-up (interpreter,
    imports, JVM, building the job) is in ``startup_wall_s``/``startup_cpu_s``. CPU is user +
    system of the peer's process and its children (PyFlink's JVM). ``na_reason`` is set, and
    ``output`` None, when the peer cannot express the query, timed out or failed."""

    system: str
    query: str
    events: int
    wall_s: float
    cpu_s: float
    output: pl.DataFrame | None
    na_reason: str | None
    startup_wall_s: float | None = None
    startup_cpu_s: float | None = None

    @property
    def events_per_core_s(self) -> float | None:
        if self.na_reason is not None or self.cpu_s <= 0:
            return None
        return self.events / self.cpu_s


class Peer:
    """A stream processor run beside strom, each query in a child process of its own venv."""

    name: str
    notes: str
    """How its semantics differ from the reference (shown beside its figures)."""

    def __init__(self, name: str, spec: VenvSpec, child: str, notes: str) -> None:
        self.name = name
        self.notes = notes
        self._spec = spec
        self._child = CHILDREN / child
        self._venv: Venv | str | None = None
        self.install_s: float | None = None
        """Seconds it took to create the venv, when this process created it."""

    def _prerequisite(self) -> str | None:
        return None

    def _ensure(self) -> Venv | str:
        if self._venv is None:
            missing = self._prerequisite()
            self._venv = missing if missing is not None else ensure_venv(self._spec)
            if isinstance(self._venv, Venv):
                self.install_s = self._venv.created_s
        return self._venv

    def version(self) -> str | None:
        """The pinned version, creating the venv if needed; None when it cannot run here."""
        return self._spec.version if isinstance(self._ensure(), Venv) else None

    def unavailable_reason(self) -> str | None:
        venv = self._ensure()
        return venv if isinstance(venv, str) else None

    @property
    def system(self) -> str:
        return f"{self.name} {self._spec.version}"

    def _inputs_missing(self, events_dir: Path, bootstrap: str) -> str | None:
        return None

    def run(self, query: str, bootstrap: str, events_dir: Path, timeout_s: float) -> PeerRun:
        def na(reason: str) -> PeerRun:
            return PeerRun(self.system, query, 0, 0.0, 0.0, None, reason)

        venv = self._ensure()
        if isinstance(venv, str):
            return na(venv)
        if query not in OUTPUT_SCHEMAS:
            return na(f"unknown query {query!r}")
        missing = self._inputs_missing(events_dir, bootstrap)
        if missing is not None:
            return na(missing)
        work = Path(tempfile.mkdtemp(prefix=f"nexmark-{self.name.replace(' ', '-')}-"))
        try:
            output, stats_path = work / "output.ndjson", work / "stats.json"
            argv = [str(venv.python), str(self._child), "--query", query]
            argv += ["--bootstrap", bootstrap, "--events-dir", str(events_dir.resolve())]
            argv += ["--output", str(output), "--stats", str(stats_path), "--work-dir", str(work)]
            child = run_child(argv, work, timeout_s)
            if child.returncode is None:
                return na(f"timeout after {timeout_s:g}s")
            if child.returncode != 0 or not stats_path.exists():
                return na(f"failed (exit {child.returncode}): {child.stderr_tail}")
            stats = json.loads(stats_path.read_text())
            if stats.get("na_reason"):
                return na(str(stats["na_reason"]))
            return PeerRun(
                system=self.system,
                query=query,
                events=int(stats["events"]),
                wall_s=float(stats["wall_s"]),
                cpu_s=float(stats["cpu_s"]),
                output=_read_output(output, query),
                na_reason=None,
                startup_wall_s=float(stats["startup_wall_s"]),
                startup_cpu_s=float(stats["startup_cpu_s"]),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _read_output(path: Path, query: str) -> pl.DataFrame:
    schema = OUTPUT_SCHEMAS[query]
    if not path.exists() or path.stat().st_size == 0:
        return pl.DataFrame(schema=schema)
    return pl.read_ndjson(path, schema=schema)


class _KafkaPeer(Peer):
    def _inputs_missing(self, events_dir: Path, bootstrap: str) -> str | None:
        return None if bootstrap else "needs the strom broker's bootstrap address"


class _PyFlink(Peer):
    def _prerequisite(self) -> str | None:
        if shutil.which("java") is None:
            return "needs a Java runtime (17) on PATH"
        return None

    def _inputs_missing(self, events_dir: Path, bootstrap: str) -> str | None:
        absent = [
            k for k in ("person", "auction", "bid") if not (events_dir / f"{k}.ndjson").exists()
        ]
        if absent:
            return f"needs the events as NDJSON; {events_dir} lacks {', '.join(absent)}.ndjson"
        return None


QUIX = VenvSpec("quixstreams", "3.28.1", ("quixstreams==3.28.1",), "quixstreams")
BYTEWAX = VenvSpec("bytewax", "0.21.1", ("bytewax[kafka]==0.21.1",), "bytewax.connectors.kafka")
PYFLINK = VenvSpec("apache-flink", "2.3.0", ("apache-flink==2.3.0",), "pyflink.table")

_QUIX_NOTES = (
    "Reads the strom topics as a consumer group. Windows are per message key (group_by "
    "repartitions through topics on the same broker; second keyings, in q4 and q5, go through "
    "a topic of their own, as Quix allows one group_by per dataframe) and close when the "
    "partition's highest timestamp minus a 4 s grace passes them, not on a watermark merged "
    "across partitions. Quix has no end of input: the child emulates the final watermark with "
    "one record per repartition partition just past the last window (q5, q7). Joins (q3, q4, "
    "q8) are keyed state over both topics (concat + group_by): join_interval only matches "
    "records already processed and lost pairs consumed out of timestamp order, and q8 as "
    "windows closed per partition dropped the topic read behind as late. q4 emits each "
    "category's average as it changes; the last value per category is kept."
)
_BYTEWAX_NOTES = (
    "Reads the strom topics with KafkaSource(tail=False), one worker in-process. EventClock "
    "with system time frozen (a pure event-time watermark, 4 s behind the latest timestamp), "
    "kept per key; q5/q7 use one key so the clock is global. Late records are dropped. q3 is "
    "a symmetric hash join in stateful_flat_map; q4 folds to the end of the input (fold_final) "
    "instead of closing auctions on event time."
)
_PYFLINK_NOTES = (
    "Local mini-cluster, parallelism 1, streaming mode, reading the NDJSON files (the PyPI "
    "package has no Kafka connector or Parquet format, and nothing can be downloaded). "
    "Flink SQL with WATERMARK dateTime - 4 s and TUMBLE/HOP window TVFs; q5 and q4 are "
    "Flink's own Nexmark formulations (regular joins/aggregates with retractions, collected as "
    "a changelog); q7 is a window join. Mini-batch on, as in Flink's Nexmark suite."
)


def all_peers() -> list[Peer]:
    return [
        _KafkaPeer("quixstreams", QUIX, "quix_child.py", _QUIX_NOTES),
        _KafkaPeer("bytewax", BYTEWAX, "bytewax_child.py", _BYTEWAX_NOTES),
        _PyFlink("pyflink", PYFLINK, "pyflink_child.py", _PYFLINK_NOTES),
    ]
