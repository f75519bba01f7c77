"""Rows as JSON objects, one ``bytes`` value each: the values :class:`KafkaSink` writes.

Polars writes the JSON (its struct ``json_encode`` kernel: Datetime and Date become strings, NaN
becomes null). A streaming pipeline hands the sink a few rows per micro-batch, though, and on a
batch that small the fixed cost of the kernel's call (~0.1 ms, most of a small batch's cost in
the sink) dwarfs the rows'. So a batch of at most :data:`SMALL_ROWS` rows whose columns are all
integers, booleans or strings is written in Python instead, to the same bytes: Python's C
string encoder (``json.dumps(s, ensure_ascii=False)``) escapes exactly as Polars does (quote,
backslash, the control characters; everything else stays UTF-8), and integers, booleans and
nulls have one spelling each. A property test holds the two paths byte-equal.
"""

from __future__ import annotations

from json.encoder import encode_basestring  # json.dumps(str, ensure_ascii=False), in C
from typing import Final

import polars as pl

__all__ = ["SMALL_ROWS", "json_values"]

#: Up to this many rows a batch of Python-encodable columns is encoded in Python (beyond it,
#: Polars' kernel is the faster of the two).
SMALL_ROWS: Final = 64

_BOOLEANS: Final = {True: "true", False: "false", None: "null"}


def _column_texts(series: pl.Series) -> list[str] | None:
    """Each value of ``series`` as JSON text; None for a type not encoded here."""
    values = series.to_list()
    nulls = series.null_count() > 0
    if series.dtype.is_integer():
        return [("null" if v is None else str(v)) for v in values] if nulls else [*map(str, values)]
    if series.dtype == pl.Boolean:
        return [*map(_BOOLEANS.__getitem__, values)]
    if series.dtype == pl.String:
        if nulls:
            return [("null" if v is None else encode_basestring(v)) for v in values]
        return [*map(encode_basestring, values)]
    return None


def json_values(batch: pl.DataFrame) -> list[bytes]:
    """Each row of ``batch`` as one JSON object (the columns in order), as bytes."""
    if batch.height <= SMALL_ROWS and batch.width:
        columns = []
        for series in batch.iter_columns():
            texts = _column_texts(series)
            if texts is None:
                break
            columns.append(texts)
        else:
            fields = (encode_basestring(n).replace("%", "%%") + ":%s" for n in batch.columns)
            template = "{" + ",".join(fields) + "}"
            return [(template % row).encode() for row in zip(*columns, strict=True)]
    return list(batch.to_struct().struct.json_encode().cast(pl.Binary).to_list())
