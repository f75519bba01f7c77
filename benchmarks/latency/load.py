"""The latency benchmark's load: a paced producer and a timing consumer, each its own process.

``python -m benchmarks.latency.load produce --bootstrap H:P --topic T`` reads commands from
stdin, one JSON object a line: ``{"rate": R, "seconds": S, "first_seq": N}`` sends ``R * S``
events ``{"seq": n, "sent_us": <epoch µs>}`` (``n`` counting from ``N``) to the topic's
partitions in turn, paced to ``R`` a second, then answers ``sent <count> <seconds taken>`` on
stdout once every one is acknowledged; ``sent_us`` is read just before each event is handed to
the client. End of input ends it.

``python -m benchmarks.latency.load consume --bootstrap H:P --topic T --out FILE`` reads the
topic from its beginning and appends, for every record, ``seq`` and ``received_us - sent_us``
as two little-endian int64 to FILE (flushed after every poll, so its size shows progress) until
SIGTERM. Both clients are librdkafka (confluent-kafka) with Nagle off and no linger, so what is
measured is the engine between the two topics, plus two broker hops.
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["RECORD", "main"]

#: One consumed record in the consumer's output file: (seq, latency in µs).
RECORD = struct.Struct("<qq")
_TICK_S = 0.001  # the producer's pacing step


def _now_us() -> int:
    return time.time_ns() // 1000


def produce(bootstrap: str, topic: str) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 0,
            "socket.nagle.disable": True,
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    partitions = len(producer.list_topics(topic, timeout=30).topics[topic].partitions)
    for line in sys.stdin:
        command: dict[str, Any] = json.loads(line)
        rate, seconds, seq = float(command["rate"]), float(command["seconds"]), command["first_seq"]
        total = int(rate * seconds)
        started = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                value = b'{"seq":%d,"sent_us":%d}' % (seq + sent, _now_us())
                while True:
                    try:
                        producer.produce(topic, value, partition=(seq + sent) % partitions)
                        break
                    except BufferError:
                        producer.poll(0.001)
                sent += 1
            producer.poll(0)
            # sleep to the next tick (pacing stays exact on average: `due` follows the clock)
            time.sleep(max(0.0, _TICK_S - (time.perf_counter() - started) % _TICK_S))
        producer.flush(30)
        print(f"sent {sent} {time.perf_counter() - started:.3f}", flush=True)


def consume(bootstrap: str, topic: str, out: Path) -> None:
    def record(event: dict[str, Any], received_us: int) -> bytes:
        return RECORD.pack(int(event["seq"]), received_us - int(event["sent_us"]))

    consume_records(bootstrap, topic, out, "strom-latency-bench", record)


def consume_records(
    bootstrap: str,
    topic: str,
    out: Path,
    group: str,
    record: Callable[[dict[str, Any], int], bytes],
) -> None:
    """Read ``topic`` from the beginning until SIGTERM, appending ``record(event, received)``
    of each JSON record (``received``: the poll's return in epoch microseconds) to ``out``;
    prints ``ready`` once reading."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "socket.nagle.disable": True,
            "fetch.wait.max.ms": 100,
        }
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    with out.open("ab", buffering=0) as f:
        print("ready", flush=True)
        while not stopping:
            # poll() returns as soon as one record is there; consume(n, timeout) would wait
            # for n records or the whole timeout, which is latency this benchmark must not add
            first = consumer.poll(0.05)
            received = _now_us()
            if first is None:
                continue
            messages = [first, *consumer.consume(10_000, 0)]
            chunk = bytearray()
            for message in messages:
                value = message.value()
                if message.error() is not None or value is None:
                    continue
                chunk += record(json.loads(value), received)
            if chunk:
                f.write(chunk)
    consumer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.role == "produce":
        produce(args.bootstrap, args.topic)
    else:
        if args.out is None:
            parser.error("consume needs --out FILE")
        consume(args.bootstrap, args.topic, args.out)


if __name__ == "__main__":
    main()
