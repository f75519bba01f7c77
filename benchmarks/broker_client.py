"""The client side of the broker benchmark, run in its own process (librdkafka via confluent-kafka).

    python -m benchmarks.broker_client produce|consume|latency --bootstrap H:P --topic T ...

Prints one JSON object: records, bytes, wall_s, cpu_s (this client's), and latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _producer(args: argparse.Namespace, **extra: Any) -> Producer:
    config = {
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "queue.buffering.max.messages": 2_000_000,
        "compression.type": "none",
        **extra,
    }
    return Producer(config)


def produce(args: argparse.Namespace) -> dict[str, Any]:
    payload = os.urandom(args.size)
    producer = _producer(args)
    failures = 0

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        nonlocal failures
        if err is not None:
            failures += 1

    cpu0, t0 = _cpu_s(), time.perf_counter()
    for i in range(args.count):
        while True:
            try:
                producer.produce(
                    args.topic, payload, partition=i % args.partitions, on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.001)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return {
        "records": args.count - failures - left,
        "bytes": (args.count - failures - left) * args.size,
        "wall_s": wall,
        "cpu_s": cpu,
        "failures": failures + left,
    }


def consume(args: argparse.Namespace) -> dict[str, Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "bench",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
            "fetch.wait.max.ms": 100,
            "queued.max.messages.kbytes": 1_048_576,
        }
    )
    consumer.assign([TopicPartition(args.topic, p, 0) for p in range(args.partitions)])
    records = nbytes = 0
    cpu0, t0 = _cpu_s(), time.perf_counter()
    deadline = t0 + 120
    while records < args.count and time.perf_counter() < deadline:
        for msg in consumer.consume(10_000, 0.5):
            if msg.error() is None:
                records += 1
                nbytes += len(msg.value() or b"")
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    consumer.close()
    return {"records": records, "bytes": nbytes, "wall_s": wall, "cpu_s": cpu}


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Produce at a fixed rate (bytes/s) and time each record from produce() to its ack."""
    payload = os.urandom(args.size)
    latencies: list[float] = []
    failures = 0
    # Untimed records get no callback, so the client's Python stays off the hot path; the
    # orchestrator checks completeness from the partitions' end offsets afterwards.
    producer = _producer(args, **{"linger.ms": 1})
    per_tick = max(1, round(args.rate / args.size / 1000))  # records per millisecond

    def make_callback(sent: float) -> Any:
        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            nonlocal failures
            nonlocal failures
            if err is None:
                latencies.append((time.perf_counter() - sent) * 1000)
            else:
                failures += 1

        return on_delivery

    cpu0, t0 = _cpu_s(), time.perf_counter()
    sent = 0
    tick = 0
    while sent < args.count:
        target = t0 + tick / 1000
        now = time.perf_counter()
        if now < target:
            # poll() takes whole milliseconds: sub-millisecond waits would spin; sleep instead.
            time.sleep(target - now)
            producer.poll(0)
            continue
        # One timed record per tick keeps the client's own Python overhead out of the latency.
        producer.produce(
            args.topic,
            payload,
            partition=sent % args.partitions,
            on_delivery=make_callback(time.perf_counter()),
        )
        sent += 1
        for _ in range(min(per_tick, args.count - sent) - 1):
            producer.produce(args.topic, payload, partition=sent % args.partitions)
            sent += 1
        producer.poll(0)
        tick += 1
    producer.flush(60)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    latencies.sort()
    return {
        "records": args.count - failures,
        "bytes": (args.count - failures) * args.size,
        "samples": len(latencies),
        "wall_s": wall,
        "cpu_s": cpu,
        "failures": failures,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["produce", "consume", "latency"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--acks", default="all")
    parser.add_argument("--rate", type=float, default=10e6, help="bytes/s for latency mode")
    args = parser.parse_args()
    result = {"produce": produce, "consume": consume, "latency": latency}[args.mode](args)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
