"""The ML benchmark's contract, shared by strom's side and the peers' child scripts.

Standard library only: the peer venvs hold the peer, scikit-learn and skops, not strom.

Events are JSON ``{"device": "d07", "ts": <ms>, "temperature": t, "vibration": v}`` keyed by the
device. The feature step is one tumbling window of :data:`WINDOW_MS` per device, closed on event
time with no allowed out-of-orderness; its features, in the model's column order, are
:data:`FEATURES`. A prediction is JSON ``{"device", "window_end", "score"}`` (the score: the
model's ``predict_proba`` of the positive class). Records of a device starting with
:data:`END_PREFIX` only move event time past the last windows of a bounded input; they are never
scored.

A child is ``python CHILD.py --bootstrap H:P --input IN --output OUT --model FILE.skops
--work-dir DIR [--bounded --stats FILE.json]``: bounded, it reads IN up to its end offsets, then
writes ``{"events", "wall_s", "cpu_s"}`` (from the moment the dataflow is built and the model
loaded, to the end of input) to the stats file and exits; otherwise it runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

WINDOW_MS = 100
END_PREFIX = "_end"
FEATURES = ("readings", "mean_temperature", "max_temperature", "mean_vibration", "max_vibration")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for name in ("--bootstrap", "--input", "--output"):
        parser.add_argument(name, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--bounded", action="store_true")
    parser.add_argument("--stats", type=Path)
    args = parser.parse_args()
    if args.bounded and args.stats is None:
        parser.error("--bounded needs --stats FILE")
    return args


def load_model(path: Path) -> Any:
    """The skops file's model, trusting the types it names (the benchmark wrote it)."""
    import skops.io as sio

    return sio.load(path, trusted=sio.get_untrusted_types(file=path))


def cpu_s() -> float:
    """User + system CPU seconds of this process, every thread (librdkafka's) included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """From :meth:`ready` (dataflow built, model loaded) to :meth:`done` (end of input)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = cpu_s()

    def ready(self) -> None:
        self.wall, self.cpu = time.perf_counter(), cpu_s()

    def write(self, path: Path, events: int) -> None:
        stats = {
            "events": events,
            "wall_s": time.perf_counter() - self.wall,
            "cpu_s": cpu_s() - self.cpu,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(path)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The last offset of every non-empty partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ml-bench-offsets"})
    try:
        ends: dict[int, int] = {}
        for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high - 1
        return ends
    finally:
        consumer.close()
