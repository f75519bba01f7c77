"""KafkaSource fetch benchmark: strom's own client beside librdkafka, per CPU-second.

A strom broker runs as its own process; this process produces ``N`` Nexmark-like JSON bids
(~150 B each) to a one-partition topic, then reads them back with a bounded ``KafkaSource``
once per client, decoding each batch to a Polars frame with the bid schema: all seven fields,
or the three a query like Nexmark q2 needs (``PROJECTED_SCHEMA``; the rest are skipped).
``cpu_s`` is this process's CPU time (all its threads, librdkafka's included), so
``events_per_core_s`` is what one core of the engine's source does. ``correct`` means every
field of every record matched.

Run: ``python -m benchmarks.source_fetch [--quick]`` (one JSON line per result).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import polars as pl
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks.nexmark.generator import BID_SCHEMA
from benchmarks.systems import start_strom
from strom.connectors import KafkaSource
from strom.connectors.kafka.source import KafkaClient
from strom.pipeline import END_OF_PARTITION

__all__ = ["BID_SCHEMA", "PROJECTED_SCHEMA", "run"]

PROJECTED_SCHEMA = pl.Schema({name: BID_SCHEMA[name] for name in ("auction", "price", "dateTime")})
TOPIC = "bids"


def _bids(n: int) -> pl.DataFrame:
    """Deterministic bids: record ``i``'s fields are functions of ``i``."""
    i = pl.int_range(0, n)
    return pl.select(
        auction=1_000 + i % 997,
        bidder=2_000 + i * 7 % 10_007,
        price=i * 31 % 1_000_003,
        channel=pl.format("channel-{}", i % 113),
        url=pl.format("https://www.nexmark.com/item.htm?query=1&id={}", i % 50_000),
        dateTime=1_700_000_000_000 + i,
        extra=pl.format("x{}", i % 10),
    ).cast(BID_SCHEMA)


def _produce(bootstrap: str, bids: pl.DataFrame) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
        future.result(30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20, "acks": 1}
    )
    for line in bids.write_ndjson().splitlines():
        while True:
            try:
                producer.produce(TOPIC, value=line.encode(), partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _read(
    bootstrap: str, client: KafkaClient, schema: pl.Schema, expected: pl.DataFrame
) -> dict[str, Any]:
    source = KafkaSource(bootstrap, TOPIC, schema=schema, bounded=True, client=client)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    reader = source.open_partition(0)
    frames = []
    while (item := reader.poll()) is not END_OF_PARTITION:
        if item is not None:
            frames.append(item)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    source.close()
    got = pl.concat(frames).select(list(schema)) if frames else pl.DataFrame()
    n = got.height
    return {
        "events": n,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "events_per_s": round(n / wall),
        "events_per_core_s": round(n / cpu) if cpu else None,
        "correct": got.equals(expected.select(list(schema))),
    }


def cold_start() -> dict[str, Any]:
    """Seconds to import the kernels' modules (numba, llvmlite included), then to compile both
    kernels (record batches, flat JSON) with an empty cache, then to load them from that cache
    (each in a fresh interpreter)."""
    code = (
        "import time; t0 = time.perf_counter(); "
        "from strom.connectors.kafka.native_json import warm_up; t1 = time.perf_counter(); "
        "warm_up(); print(t1 - t0, time.perf_counter() - t1)"
    )
    out: dict[str, Any] = {"benchmark": "source_fetch_cold_start", "system": "strom kernel"}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("compile_s", "cached_s"):
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            import_s, kernel_s = (float(x) for x in done.stdout.split())
            out["import_s"] = round(import_s, 3)
            out[label] = round(kernel_s, 3)
    return out


def run(quick: bool, emit: Callable[[dict[str, Any]], None]) -> None:
    """Produce once, then read with each client and schema, twice (in the same order each
    round: full schema with strom, then librdkafka, then the projected schema likewise)."""
    n = 200_000 if quick else 2_000_000
    expected = _bids(n)
    emit(cold_start())
    from strom.connectors.kafka.native_json import warm_up

    warm_up()  # the kernels' compile (or cache load) is not part of the read
    with start_strom("never") as broker:
        _produce(broker.bootstrap, expected)
        # two rounds, alternating: the first read in a process also pays one-off costs (Polars'
        # thread pool and JSON reader, page cache), which would otherwise favour the second
        for round_no in (1, 2):
            clients: tuple[KafkaClient, ...] = ("strom", "librdkafka")
            for schema, client in itertools.product((BID_SCHEMA, PROJECTED_SCHEMA), clients):
                result = _read(broker.bootstrap, client, schema, expected)
                params = {
                    "records": n,
                    "partitions": 1,
                    "format": "json",
                    "fields": len(schema),
                    "round": round_no,
                }
                emit(
                    {
                        "benchmark": "source_fetch",
                        "system": f"KafkaSource(client={client!r})",
                        "params": params,
                        **result,
                    }
                )


def main() -> None:
    run("--quick" in sys.argv, lambda line: print(json.dumps(line), flush=True))


if __name__ == "__main__":
    main()
