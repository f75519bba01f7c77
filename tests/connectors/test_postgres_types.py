"""Polars ↔ PostgreSQL types: the pure mappings, and round trips through a real server."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from strom.connectors import PostgresSink, PostgresTable
from strom.connectors.sql.postgres import (
    copy_chunks,
    polars_type,
    postgres_type,
    to_copy_frame,
    writable,
)


def test_postgres_types() -> None:
    assert postgres_type(pl.Int8()) == "smallint"
    assert postgres_type(pl.UInt32()) == "bigint"
    assert postgres_type(pl.UInt64()) == "numeric(20, 0)"
    assert postgres_type(pl.Datetime("ns", "Asia/Tokyo")) == "timestamptz"
    assert postgres_type(pl.Decimal(12, 3)) == "numeric(12, 3)"
    assert postgres_type(pl.List(pl.Int64())) == "jsonb"
    assert postgres_type(pl.Enum(["a"])) == "text"
    with pytest.raises(TypeError, match="no column type for Polars Object"):
        postgres_type(pl.Object())


def test_writable() -> None:
    assert writable(pl.Int64(), "int4") and writable(pl.Int8(), "numeric")
    assert writable(pl.Float64(), "numeric") and not writable(pl.Float64(), "int8")
    assert writable(pl.String(), "uuid") and writable(pl.Null(), "bytea")
    assert writable(pl.Date(), "timestamp") and not writable(pl.Datetime(), "date")
    assert writable(pl.Struct({"a": pl.Int64()}), "json")
    assert not writable(pl.Boolean(), "int4") and not writable(pl.Binary(), "text")
    assert not writable(pl.Object(), "text")


def test_polars_types() -> None:
    assert polars_type("int4") == pl.Int32()
    assert polars_type("numeric", ((12 << 16) | 3) + 4) == pl.Decimal(12, 3)
    assert polars_type("numeric") == pl.Float64()
    assert polars_type("numeric", ((60 << 16) | 0) + 4) == pl.Float64()
    assert polars_type("timestamptz") == pl.Datetime("us", "UTC")
    assert polars_type("uuid") == pl.String()


def test_copy_text() -> None:
    frame = pl.DataFrame(
        {
            "s": ["a", "", None, "\\."],
            "b": [b"\x01", None, b"", b"\xff"],
            "f": [1.5, float("nan"), None, float("-inf")],
            "t": pl.Series([dt.datetime(2024, 1, 1, 12)] * 4).dt.replace_time_zone("Etc/GMT-2"),
        }
    )
    text = b"".join(copy_chunks(to_copy_frame(frame))).decode()
    assert text.splitlines() == [
        '"a","\\x01",1.5,"2024-01-01 10:00:00.000000+00"',
        '"",,NaN,"2024-01-01 10:00:00.000000+00"',
        ',"\\x",,"2024-01-01 10:00:00.000000+00"',
        '"\\.","\\xff",-inf,"2024-01-01 10:00:00.000000+00"',
    ]


_tables = itertools.count()
_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
_ROW = st.tuples(
    st.none() | st.integers(-(2**63), 2**63 - 1),
    st.none() | st.floats(allow_nan=True, allow_infinity=True),
    st.none() | _text,
    st.none() | st.booleans(),
    st.none() | st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.none() | st.binary(),
    st.none() | st.dates(),
)
_SCHEMA = {
    "id": pl.Int64(),
    "i": pl.Int64(),
    "f": pl.Float64(),
    "s": pl.String(),
    "ok": pl.Boolean(),
    "at": pl.Datetime("us"),
    "raw": pl.Binary(),
    "day": pl.Date(),
}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=st.lists(st.lists(_ROW, min_size=1, max_size=30), min_size=1, max_size=3),
    upsert=st.booleans(),
)
def test_round_trip(postgres_dsn: str, batches: list[list[tuple[Any, ...]]], upsert: bool) -> None:
    """What PostgresSink writes, PostgresTable reads back unchanged (types and values)."""
    table = f"rt_{next(_tables)}"
    frames = []
    ids = itertools.count()
    for rows in batches:
        keyed = [(next(ids) // (2 if upsert else 1), *row) for row in rows]
        frames.append(pl.DataFrame(keyed, schema=_SCHEMA, orient="row"))
    sink = PostgresSink(postgres_dsn, table, mode="upsert" if upsert else "insert", key=["id"])
    sink.open()
    for frame in frames:
        sink.write(frame)
    sink.close()
    expected = pl.concat(frames).unique("id", keep="last", maintain_order=True).sort("id")
    with PostgresTable(postgres_dsn, table, key="id") as back:
        assert back.schema() == pl.Schema(_SCHEMA)
        found = back.lookup(expected.get_column("id")).sort("id")
    assert_frame_equal(found, expected)
