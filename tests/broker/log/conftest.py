"""Helpers for the log tests: small record batches built with strom's own encoder."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from strom.kafka.protocol.records import Record, build_batch

MakeBatch = Callable[..., bytes]


def _make_batch(
    count: int = 1,
    *,
    timestamp: int = 1_000,
    value_size: int = 10,
    compression: str = "none",
    tag: int = 0,
) -> bytes:
    """``count`` records with timestamps ``timestamp + i`` and values naming ``tag`` and ``i``."""
    records = []
    for i in range(count):
        value = f"{tag}:{i}:".encode().ljust(value_size, b"x")
        records.append(Record(timestamp=timestamp + i, key=b"k%d" % i, value=value))
    return build_batch(records, compression=compression)


@pytest.fixture
def make_batch() -> MakeBatch:
    return _make_batch
