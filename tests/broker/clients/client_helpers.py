"""Shared by the client-compatibility tests: test messages, polling, partitioning, on-disk checks.

Nothing here talks to a Kafka client: each test module drives its own client and converts what
it reads into :class:`Msg` / :class:`Got`, so every module compares exact content the same way.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from strom.broker import Broker
from strom.kafka.protocol.records import iter_batches

T = TypeVar("T")

#: Every record-batch codec of the Kafka protocol (the on-disk codec id is the list index).
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class Msg:
    """What a producer sent: the comparable content of one record."""

    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Got:
    """What a consumer read: a record with its place in the log."""

    partition: int
    offset: int
    msg: Msg


def make_messages(
    tag: str, count: int, *, start: int = 0, binary: bool = True, null_headers: bool = True
) -> list[Msg]:
    """``count`` distinct messages: 7 recurring keys (so several land in each partition),
    values long and repetitive enough that every codec really compresses them, and headers
    including a repeated header name and an empty header value.

    ``binary=False`` keeps keys, values and headers printable and free of ``:``/newlines
    (for kcat's line-oriented input); ``binary=True`` adds non-UTF-8 bytes, null keys, null
    values (tombstones), empty values and, unless ``null_headers=False`` (kafka-python cannot
    send them), null header values.
    """
    out = []
    for i in range(start, start + count):
        key: bytes | None = f"key-{i % 7}".encode()
        value: bytes | None = f"{tag}-{i:05d}-".encode() + b"abcdefgh" * (i % 40)
        headers: Headers = (("seq", str(i).encode()), ("tag", tag.encode()))
        if binary:
            value = (value or b"") + bytes([0, 255, 128, i % 256])
            if i % 5 == 1:
                headers = (*headers, ("seq", b""), ("bin", bytes([0xFF, 0x00, i % 256])))
            if i % 11 == 3:
                key = None
            if i % 13 == 4 and key is not None:
                value = None
            if i % 17 == 6:
                value = b""
            if i % 9 == 2 and null_headers:
                headers = (*headers, ("null", None))
        out.append(Msg(key, value, headers))
    return out


def by_partition(records: Iterable[Got]) -> dict[int, list[Got]]:
    """Records grouped by partition, each list in the order read."""
    grouped: dict[int, list[Got]] = defaultdict(list)
    for r in records:
        grouped[r.partition].append(r)
    return dict(grouped)


@dataclass(slots=True)
class Sent:
    """Producer-side bookkeeping: each message with the partition and offset it was given."""

    placed: list[Got] = field(default_factory=list)

    def add(self, partition: int, offset: int, msg: Msg) -> None:
        self.placed.append(Got(partition, offset, msg))

    def expected(self) -> dict[int, list[Msg]]:
        """Per partition, the messages in offset order."""
        return {
            p: [g.msg for g in sorted(gots, key=lambda g: g.offset)]
            for p, gots in by_partition(self.placed).items()
        }


def assert_same_log(got: Sequence[Got], sent: Sent) -> None:
    """``got`` is exactly what was sent: same partitions, same offsets, same content, read in
    offset order within each partition, nothing missing or repeated."""
    got_by_p = by_partition(got)
    for p, records in got_by_p.items():
        offsets = [r.offset for r in records]
        assert offsets == sorted(offsets), f"partition {p} read out of order: {offsets}"
    assert {p: [(r.offset, r.msg) for r in rs] for p, rs in got_by_p.items()} == {
        p: [(g.offset, g.msg) for g in sorted(gs, key=lambda g: g.offset)]
        for p, gs in by_partition(sent.placed).items()
    }


def assert_in_send_order(sent: Sent, order: Sequence[Msg]) -> None:
    """Within each partition, offsets follow the order the messages were sent in."""
    position = {m: i for i, m in enumerate(order)}
    assert len(position) == len(order), "test messages must be distinct"
    for p, msgs in sent.expected().items():
        assert [position[m] for m in msgs] == sorted(position[m] for m in msgs), p


def wait_until(condition: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def murmur2(data: bytes) -> int:
    """Kafka's Java ``Utils.murmur2`` (the default partitioner's hash), as a signed 32-bit int."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[length - length % 4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java default partitioner picks for a non-null key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class StoredBatch:
    partition: int
    base_offset: int
    records: int
    codec: str
    producer_id: int
    base_sequence: int


def stored_batches(data_dir: Path, topic: str) -> list[StoredBatch]:
    """The record batches of ``topic`` as they lie in the broker's segment files.

    Reads files only (safe while the broker runs: appends are whole batches and
    :func:`iter_batches` stops at a partial tail).
    """
    out = []
    for pdir in sorted((data_dir / "logs").glob(f"{topic}-*")):
        partition = int(pdir.name.rsplit("-", 1)[1])
        if pdir.name != f"{topic}-{partition}":
            continue
        for seg in sorted(pdir.glob("*.log")):
            for h, _ in iter_batches(seg.read_bytes()):
                out.append(
                    StoredBatch(
                        partition,
                        h.base_offset,
                        h.records_count,
                        CODECS[h.compression],
                        h.producer_id,
                        h.base_sequence,
                    )
                )
    return out


class RestartableBroker:
    """A :class:`Broker` on a fixed data directory that can be restarted on the same port."""

    def __init__(self, data_dir: Path, **config: object) -> None:
        self.data_dir = data_dir
        self.config = config
        self.broker = Broker(data_dir, **config).start()
        self.port = self.broker.port

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    def restart(self) -> None:
        """Stop cleanly, then start again on the same data directory and port."""
        self.broker.stop()
        self.broker = Broker(self.data_dir, **{**self.config, "port": self.port}).start()

    def stop(self) -> None:
        self.broker.stop()
