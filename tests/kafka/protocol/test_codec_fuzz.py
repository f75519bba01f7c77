"""Malformed input to every request decoder strom serves: a DecodeError, never anything else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.broker.handlers import load_handlers
from strom.broker.handlers.base import REGISTRY
from strom.kafka.protocol.codec import DecodeError, codec_for


def _request_cases() -> list[tuple[str, int]]:
    load_handlers()
    return sorted(
        (entry.request, v)
        for entry in REGISTRY.values()
        for v in range(entry.min_version, entry.max_version + 1)
    )


@pytest.mark.parametrize(("name", "version"), _request_cases())
@settings(max_examples=30, deadline=None)
@given(raw=st.binary(max_size=256))
def test_random_bytes(name: str, version: int, raw: bytes) -> None:
    codec = codec_for(name, version)
    with contextlib.suppress(DecodeError):
        codec.decode(raw)


@pytest.mark.parametrize(("name", "version"), _request_cases())
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_mutated_valid_request(name: str, version: int, data: st.DataObject) -> None:
    """Truncations and byte flips of a valid encoding decode or fail cleanly."""
    codec = codec_for(name, version)
    valid = bytearray(codec.encode({}))
    if data.draw(st.booleans()) and valid:
        valid = valid[: data.draw(st.integers(0, len(valid) - 1))]
    for _ in range(data.draw(st.integers(0, 4))):
        if valid:
            i = data.draw(st.integers(0, len(valid) - 1))
            valid[i] = data.draw(st.integers(0, 255))
    valid += data.draw(st.binary(max_size=8))
    with contextlib.suppress(DecodeError):
        codec.decode(bytes(valid))
