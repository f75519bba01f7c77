"""The ML benchmark's load: a pre-filled topic, a paced live producer and a timing consumer.

:func:`fill` writes generated readings (keyed by device, partition ``device % partitions``, so
every partition is in event-time order) and the end records, for the throughput runs.

``python -m benchmarks.ml.load produce --bootstrap H:P --topic T --partitions N`` reads
commands from stdin, one JSON object a line: ``{"rate": R, "seconds": S}`` sends ``R * S``
readings paced to ``R`` a second, each stamped with the wall clock (ms) just before it is handed
to the client as its event time ``ts``, then answers one JSON line once every one is
acknowledged: ``{"sent", "start_ms", "end_ms", "windows"}``, ``windows`` being every distinct
``[device, window_end]`` it produced readings for. End of input ends it.

``python -m benchmarks.ml.load consume --bootstrap H:P --topic T --out FILE`` reads the
predictions topic from its beginning and appends, for every prediction, its device number,
``window_end`` (ms) and the wall time it was received (µs) as three little-endian int64 to
FILE (flushed after every poll) until SIGTERM. Both clients are librdkafka with Nagle off and
no linger.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.latency.load import consume_records
from benchmarks.ml.data import DEVICES, WINDOW_MS, device_name, end_records

__all__ = ["RECORD", "fill", "main"]

#: One received prediction in the consumer's file: (device, window_end ms, received µs).
RECORD = struct.Struct("<qqq")
_TICK_S = 0.001


def _producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 0,
            "socket.nagle.disable": True,
            "acks": "all",
        }
    )


def _send(producer: Any, topic: str, value: bytes, key: bytes, partition: int) -> None:
    while True:
        try:
            producer.produce(topic, value, key=key, partition=partition)
            return
        except BufferError:
            producer.poll(0.001)


def fill(bootstrap: str, topic: str, frame: pl.DataFrame, partitions: int) -> int:
    """Write ``frame``'s readings, then the end records, to ``topic``; the records written."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "acks": "all",
            "batch.num.messages": 10_000,
        }
    )
    readings = frame.select("device", "ts", "temperature", "vibration")
    lines = readings.write_ndjson().splitlines()
    devices = readings["device"].to_list()
    for device, line in zip(devices, lines, strict=True):
        _send(producer, topic, line.encode(), device.encode(), int(device[1:]) % partitions)
    last_ts = int(readings["ts"].max())  # type: ignore[arg-type]
    for p, record in enumerate(end_records(last_ts, partitions)):
        _send(producer, topic, json.dumps(record).encode(), record["device"].encode(), p)
    if producer.flush(60):
        raise RuntimeError("the readings were not all delivered")
    return len(lines) + partitions


def produce(bootstrap: str, topic: str, partitions: int, seed: int = 11) -> None:
    producer = _producer(bootstrap)
    rng = np.random.default_rng(seed)
    names = [device_name(i) for i in range(DEVICES)]
    for line in sys.stdin:
        command: dict[str, Any] = json.loads(line)
        rate, seconds = float(command["rate"]), float(command["seconds"])
        total = int(rate * seconds)
        devices = rng.integers(0, DEVICES, total)
        temperatures = (20.0 + devices * 0.1 + rng.normal(0.0, 1.0, total)).round(3)
        vibrations = np.abs(rng.normal(0.3, 0.1, total)).round(4)
        windows: set[tuple[int, int]] = set()
        start_ms = time.time_ns() // 1_000_000
        started = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                d = int(devices[sent])
                ts = time.time_ns() // 1_000_000
                value = b'{"device":"%s","ts":%d,"temperature":%r,"vibration":%r}' % (
                    names[d].encode(),
                    ts,
                    float(temperatures[sent]),
                    float(vibrations[sent]),
                )
                _send(producer, topic, value, names[d].encode(), d % partitions)
                windows.add((d, ts - ts % WINDOW_MS + WINDOW_MS))
                sent += 1
            producer.poll(0)
            time.sleep(max(0.0, _TICK_S - (time.perf_counter() - started) % _TICK_S))
        end_ms = time.time_ns() // 1_000_000
        producer.flush(30)
        answer = {"sent": sent, "start_ms": start_ms, "end_ms": end_ms, "windows": sorted(windows)}
        print(json.dumps(answer), flush=True)


def consume(bootstrap: str, topic: str, out: Path) -> None:
    def record(prediction: dict[str, Any], received_us: int) -> bytes:
        device, end = int(prediction["device"][1:]), int(prediction["window_end"])
        return RECORD.pack(device, end, received_us)

    consume_records(bootstrap, topic, out, "strom-ml-bench", record)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.role == "produce":
        produce(args.bootstrap, args.topic, args.partitions)
    else:
        if args.out is None:
            parser.error("consume needs --out FILE")
        consume(args.bootstrap, args.topic, args.out)


if __name__ == "__main__":
    main()
