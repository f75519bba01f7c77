"""Bulk JSON decoding: exact reasons for bad values, and bulk == one value at a time."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.connectors import decode
from strom.connectors.decode import decode_json, decode_raw

SCHEMA = pl.Schema({"ts": pl.Int64(), "device": pl.String(), "temp": pl.Float64()})
GOOD = b'{"ts": 1, "device": "a", "temp": 1.5}'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty value"),
        (b"", "empty value"),
        (b"   ", "empty value"),
        (
            b"{bad",
            "invalid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (b'{"ts": 1, "device": "a", "temp": NaN}', "invalid JSON: NaN is not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8: invalid start byte at byte 0"),
        (
            b'{"ts": 1, "device": "caf\xe9", "temp": 1.5}',
            "not UTF-8: invalid continuation byte at byte 24",
        ),
        (b"[1, 2]", "not a JSON object: an array"),
        (b"42", "not a JSON object: a number"),
        (b"null", "not a JSON object: null"),
        (
            b'{"ts": "x", "device": "a", "temp": 1.5}',
            "does not match the schema: cannot parse 'x' (string) as Int64",
        ),
        (
            b'{"ts": 1.5, "device": "a", "temp": 1.5}',
            "does not match the schema: cannot parse '1.5' (f64) as Int64",
        ),
        (
            b'{"ts": 1, "device": "a", "temp": "hot"}',
            "does not match the schema: cannot parse 'hot' (string) as Float64",
        ),
        (b'{"ts": 1, "device": "a"}', "missing or null field(s): temp"),
        (b'{"device": "a", "temp": null}', "missing or null field(s): ts, temp"),
        (b"{}", "missing or null field(s): ts, device, temp"),
    ],
)
def test_bad_value_reason(value: bytes | None, reason: str) -> None:
    decoded = decode_json([GOOD, value, GOOD], SCHEMA)
    assert [(f.index, f.reason) for f in decoded.failures] == [(1, reason)]
    assert decoded.good == [0, 2]
    assert decoded.frame.rows() == [(1, "a", 1.5), (1, "a", 1.5)]


def test_coercions_and_extra_fields_follow_polars() -> None:
    values = [
        b'{"ts": 1, "device": 7, "temp": 2, "extra": [1]}',  # number into String, int into Float
        b'{"ts": 2, "device": {"x": 1}, "temp": -0.5}',  # object into String: its text
        b'{"ts": 3,\n "device": "pretty",\n "temp": 1}',  # a multi-line value is still one record
    ]
    decoded = decode_json(values, SCHEMA)
    assert decoded.failures == []
    assert decoded.frame.rows() == [(1, "7", 2.0), (2, '{"x": 1}', -0.5), (3, "pretty", 1.0)]


def test_optional_fields_may_be_absent() -> None:
    decoded = decode_json([b'{"ts": 1, "device": "a"}'], SCHEMA, required=["ts", "device"])
    assert decoded.failures == [] and decoded.good is None
    assert decoded.frame.rows() == [(1, "a", None)]


def test_all_good_is_one_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_parses(monkeypatch)
    decoded = decode_json([GOOD] * 5_000, SCHEMA)
    assert decoded.good is None and decoded.frame.height == 5_000
    assert calls == [5_000]


def test_bad_values_are_found_by_bisection(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_parses(monkeypatch)
    values = [GOOD] * 4_096
    values[1234] = b"{oops"
    values[4000] = b'{"ts": "late"}'
    decoded = decode_json(values, SCHEMA)
    assert [f.index for f in decoded.failures] == [1234, 4000]
    assert decoded.frame.height == 4_094
    assert len(calls) <= 2 * 2 * 13 + 3  # about 2 * log2(n) parses per bad value, not n
    assert sum(calls) < 4 * 4_096 * 13 // 10  # each level of the bisection parses at most n


def test_raw_values_are_binary() -> None:
    frame = decode_raw([b"\x00\xff", None, b""])
    assert frame.schema == pl.Schema({"value": pl.Binary()})
    assert frame["value"].to_list() == [b"\x00\xff", None, b""]


_FIELD = st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=5), st.floats(allow_nan=False))
_RECORD = st.fixed_dictionaries(
    {}, optional={"ts": _FIELD, "device": _FIELD, "temp": _FIELD, "x": _FIELD}
)
_VALUE = st.one_of(
    _RECORD.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=8),
    st.sampled_from([None, b"", b"[]", b"{", b"\xc3\x28", GOOD, b"{}\n{}"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_VALUE, max_size=40))
def test_bulk_equals_one_at_a_time(values: list[bytes | None]) -> None:
    bulk = decode_json(values, SCHEMA)
    singles = [decode_json([v], SCHEMA) for v in values]
    expected_failures = [(i, s.failures[0].reason) for i, s in enumerate(singles) if s.failures]
    assert [(f.index, f.reason) for f in bulk.failures] == expected_failures
    good = [i for i, s in enumerate(singles) if not s.failures]
    assert (bulk.good if bulk.good is not None else list(range(len(values)))) == good
    expected = pl.concat([singles[i].frame for i in good]) if good else pl.DataFrame(schema=SCHEMA)
    assert_frame_equal(bulk.frame, expected)


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = pl.read_ndjson

    def counting(source: bytes, **kwargs: object) -> pl.DataFrame:
        calls.append(source.count(b"\n") + 1)
        return real(source, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decode.pl, "read_ndjson", counting)
    return calls
