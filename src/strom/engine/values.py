"""Plain-data values as bytes: how operator state stores what only Python knows the type of.

A user's ``ValueState`` may hold a dict of lists, a ``count_distinct`` accumulator a set of
datetimes: no one Arrow type fits. Such values are stored one per row in a Binary column, each
encoded as JSON in which everything JSON lacks is one tagged object (``{"$set": [...]}``).

- Round trip: ``decode(encode(v)) == v`` with the same types, for None, bool, int (any size),
  float (NaN and infinities too), str, bytes, list, tuple, dict (any plain-data keys), set,
  frozenset, ``datetime`` (naive, or with a ``zoneinfo`` zone or a fixed offset), date, time,
  timedelta and Decimal, nested in any way.
- Safety: decoding builds only those types; it never imports or calls anything named by the
  data (unlike pickle), so a state from anywhere can be restored without running code.
- Anything else is refused at encoding with :class:`~strom.engine.contracts.StateError`
  naming its type (convert it to plain data first, e.g. a dataclass with ``asdict``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from strom.engine.contracts import StateError

__all__ = ["decode", "decode_column", "encode", "encode_column"]

_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode(value: object) -> bytes:
    """``value`` as bytes (set elements sorted: their bytes do not depend on insertion order)."""
    return _text(_plain(value)).encode()


def decode(data: bytes) -> Any:
    try:
        return _value(json.loads(data))
    except (ValueError, TypeError, KeyError) as exc:
        raise StateError(f"not an encoded state value: {exc}") from exc


def encode_column(name: str, values: Iterable[object]) -> pl.Series:
    """``values`` as a Binary column of :func:`encode` (None stays a null)."""
    return pl.Series(name, [None if v is None else encode(v) for v in values], dtype=pl.Binary)


def decode_column(column: pl.Series) -> list[Any]:
    return [None if b is None else decode(b) for b in column.to_list()]


def _plain(v: object) -> Any:
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return int(v)  # an int subclass (IntEnum, numpy's on some platforms) as a plain int
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$float": repr(float(v))}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, tuple):
        return {"$tuple": [_plain(x) for x in v]}
    if isinstance(v, dict):
        return {"$dict": [[_plain(k), _plain(x)] for k, x in v.items()]}
    if isinstance(v, set | frozenset):  # canonical order: equal sets, equal bytes
        items = sorted((_plain(x) for x in v), key=_text)
        return {"$frozenset" if isinstance(v, frozenset) else "$set": items}
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode()}
    if isinstance(v, dt.datetime):  # before date: a datetime is a date
        return _datetime(v)
    if isinstance(v, dt.date):
        return {"$date": v.isoformat()}
    if isinstance(v, dt.time):
        if v.tzinfo is not None:
            raise StateError(f"cannot store the zoned time {v!r} in state: use a datetime")
        return {"$time": v.isoformat()}
    if isinstance(v, dt.timedelta):
        return {"$timedelta": [v.days, v.seconds, v.microseconds]}
    if isinstance(v, Decimal):
        return {"$decimal": str(v)}
    raise StateError(
        f"cannot store a {type(v).__module__}.{type(v).__qualname__} in operator state: state "
        "values must be plain data (None, bool, int, float, str, bytes, list, tuple, dict, "
        "set, datetime, date, time, timedelta, Decimal); convert it first"
    )


def _text(j: Any) -> str:
    return json.dumps(j, allow_nan=False, separators=(",", ":"))


def _datetime(v: dt.datetime) -> dict[str, Any]:
    if v.tzinfo is None:
        return {"$datetime": v.isoformat()}
    if isinstance(v.tzinfo, ZoneInfo):  # the instant in UTC plus the zone's name
        utc = v.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
        return {"$datetime": utc, "zone": v.tzinfo.key}
    if v.utcoffset() is not None and isinstance(v.tzinfo, dt.timezone):
        return {"$datetime": v.isoformat()}  # the offset is part of the text
    raise StateError(f"cannot store {v!r} in state: its time zone {v.tzinfo!r} has no name")


def _value(j: Any) -> Any:
    if isinstance(j, list):
        return [_value(x) for x in j]
    if not isinstance(j, dict):
        return j
    if len(j) == 1 or (len(j) == 2 and "zone" in j):
        tag = next(k for k in j if k != "zone")
        body = j[tag]
        if tag == "$float":
            return _FLOATS[body]
        if tag == "$tuple":
            return tuple(_value(x) for x in body)
        if tag == "$dict":
            return {_value(k): _value(x) for k, x in body}
        if tag == "$set":
            return {_value(x) for x in body}
        if tag == "$frozenset":
            return frozenset(_value(x) for x in body)
        if tag == "$bytes":
            return base64.b64decode(body, validate=True)
        if tag == "$datetime":
            if "zone" in j:
                utc = dt.datetime.fromisoformat(body).replace(tzinfo=dt.UTC)
                return utc.astimezone(ZoneInfo(j["zone"]))
            return dt.datetime.fromisoformat(body)
        if tag == "$date":
            return dt.date.fromisoformat(body)
        if tag == "$time":
            return dt.time.fromisoformat(body)
        if tag == "$timedelta":
            days, seconds, micros = body
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if tag == "$decimal":
            return Decimal(body)
    raise ValueError(f"unknown tagged value {sorted(j)}")
