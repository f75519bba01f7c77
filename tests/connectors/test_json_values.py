"""The sink's JSON values: the Python path for small batches writes Polars' bytes exactly."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.connectors.kafka.json_values import SMALL_ROWS, json_values

_TYPES = {
    "int8": (pl.Int8, st.integers(-(2**7), 2**7 - 1)),
    "int64": (pl.Int64, st.integers(-(2**63), 2**63 - 1)),
    "uint64": (pl.UInt64, st.integers(0, 2**64 - 1)),
    "bool": (pl.Boolean, st.booleans()),
    "str": (pl.String, st.text()),  # every code point hypothesis draws: controls, quotes, emoji
    "float": (pl.Float64, st.floats(allow_nan=True)),  # not in the Python path: Polars writes it
}


def _polars(frame: pl.DataFrame) -> list[bytes]:
    return list(frame.select(pl.struct(pl.all()).struct.json_encode().cast(pl.Binary)).to_series())


@st.composite
def frames(draw: st.DrawFn) -> pl.DataFrame:
    kinds = draw(st.lists(st.sampled_from(sorted(_TYPES)), min_size=1, max_size=4))
    names = draw(st.lists(st.text(min_size=1, max_size=6), min_size=len(kinds),
                          max_size=len(kinds), unique=True))  # fmt: skip
    rows = draw(st.integers(0, SMALL_ROWS + 3))
    columns = {}
    for name, kind in zip(names, kinds, strict=True):
        dtype, values = _TYPES[kind]
        column = draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
        columns[name] = pl.Series(name, column, dtype=dtype)
    return pl.DataFrame(columns)


@settings(max_examples=300, deadline=None)
@given(frames())
def test_every_batch_is_encoded_as_polars_encodes_it(frame: pl.DataFrame) -> None:
    assert json_values(frame) == _polars(frame)


def test_names_with_percent_signs_and_quotes_are_escaped() -> None:
    frame = pl.DataFrame({'a%s"b\n': [1, None], "%%": ["x", "é\x00"], "ok": [True, None]})
    assert json_values(frame) == _polars(frame)
    assert json_values(frame)[0] == b'{"a%s\\"b\\n":1,"%%":"x","ok":true}'
