"""A state's bytes in pieces and read in place: the pieces are exactly :meth:`to_bytes`, any
bytes-like input reads back the same state (frames of every kind of column), and damage inside
a frame (a well-formed envelope around bad Arrow bytes) is a StateError, not a crash."""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

import polars as pl
import pytest

from strom.engine.contracts import OperatorState, StateError

FRAMES = {
    "rows": pl.DataFrame(
        {
            "i": [1, None, 3],
            "s": ["a", None, "ccc"],
            "b": [b"x", b"", None],
            "t": pl.Series([dt.datetime(2024, 1, 1), None, None], dtype=pl.Datetime("ms", "UTC")),
            "d": pl.Series([Decimal("1.25"), None, Decimal("-2")], dtype=pl.Decimal(9, 2)),
            "e": pl.Series(["x", "y", "x"], dtype=pl.Enum(["x", "y"])),
            "l": [[1], [], None],
        }
    ),
    "empty": pl.DataFrame(schema={"k": pl.String, "n": pl.UInt32}),
    "none": pl.DataFrame(),
}
STATE = OperatorState("test", 1, FRAMES, {"windows": [[10, 3]]})


def test_the_pieces_are_the_bytes_and_every_buffer_reads_back() -> None:
    blob = STATE.to_bytes()
    assert b"".join(STATE.to_parts()) == blob
    for data in (blob, bytearray(blob), memoryview(blob)):
        back = OperatorState.from_bytes(data)
        assert back.equals(STATE)
        assert {n: f.schema for n, f in back.frames.items()} == {
            n: f.schema for n, f in FRAMES.items()
        }


def test_bad_arrow_bytes_inside_a_good_envelope_are_a_state_error() -> None:
    blob = bytearray(STATE.to_bytes())
    (header_length,) = struct.unpack_from("<I", blob, 8)
    at = 16 + header_length  # the first blob's u64 length, then its bytes
    (length,) = struct.unpack_from("<Q", blob, at)
    end = at + 8 + length
    blob[end - 40 : end - 8] = b"\xff" * 32  # the file footer's block list (before its magic)
    with pytest.raises(StateError, match="not a readable operator state"):
        OperatorState.from_bytes(bytes(blob))
