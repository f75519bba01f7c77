"""Writing transactional batches and markers straight into a running broker's partition logs
(on the broker's own event loop: the logs are not thread-safe), for the read_committed tests."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from typing import TypeVar

from strom.broker import Broker
from strom.broker.log import PartitionLog
from strom.broker.state import BrokerState, now_ms
from strom.kafka.protocol.records import Record, build_batch

T = TypeVar("T")


def in_broker(broker: Broker, fn: Callable[[BrokerState], T]) -> T:
    """Run ``fn(state)`` on the broker's loop and return its result."""
    loop, runtime = broker._loop, broker._runtime
    assert loop is not None and runtime is not None and runtime.state is not None
    state = runtime.state
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        try:
            done.set_result(fn(state))
        except BaseException as exc:
            done.set_exception(exc)

    loop.call_soon_threadsafe(call)
    return done.result(timeout=30)


#: A partition's history, step by step: ("plain", values), ("txn", pid, values),
#: ("commit", pid) or ("abort", pid). Interleaved producers 1 and 2; producer 1 commits, aborts
#: and commits (brod #659); the partition ends with a commit marker.
HISTORY: list[tuple[object, ...]] = [
    ("plain", [b"p0"]),
    ("txn", 1, [b"a1", b"a2"]),
    ("txn", 2, [b"b1"]),
    ("commit", 1),
    ("txn", 1, [b"a3"]),
    ("abort", 2),
    ("abort", 1),
    ("txn", 1, [b"a4"]),
    ("commit", 1),
    ("plain", [b"p1"]),
    ("txn", 3, [b"c1"]),
    ("commit", 3),
]
COMMITTED = [b"p0", b"a1", b"a2", b"a4", b"p1", b"c1"]
UNCOMMITTED = [b"p0", b"a1", b"a2", b"b1", b"a3", b"a4", b"p1", b"c1"]
END = 13  # 8 records and 5 markers


def apply(plog: PartitionLog, steps: Sequence[tuple[object, ...]]) -> None:
    sequences: dict[int, int] = {}
    for step in steps:
        kind = step[0]
        if kind == "plain":
            values = step[1]
            assert isinstance(values, list)
            plog.append(build_batch([Record(key=b"k", value=v) for v in values]), now_ms())
        elif kind == "txn":
            pid, values = step[1], step[2]
            assert isinstance(pid, int) and isinstance(values, list)
            seq = sequences.get(pid, 0)
            records = [Record(key=b"k", value=v) for v in values]
            batch = build_batch(
                records, producer_id=pid, producer_epoch=0, base_sequence=seq, transactional=True
            )
            plog.append(batch, now_ms())
            sequences[pid] = seq + len(values)
        else:
            pid = step[1]
            assert isinstance(pid, int) and kind in ("commit", "abort")
            plog.append_marker(
                pid, 0, commit=kind == "commit", coordinator_epoch=0, now_ms=now_ms()
            )


def fill(
    broker: Broker, topic: str, steps: Sequence[tuple[object, ...]], partition: int = 0
) -> int:
    """Create ``topic`` (one partition) unless it exists, apply ``steps``; the log end offset."""

    def run(state: BrokerState) -> int:
        if topic not in state.logs.topics():
            state.logs.create_topic(topic, 1)
        plog = state.logs.partition(topic, partition)
        apply(plog, steps)
        return plog.log_end_offset

    return in_broker(broker, run)
