"""Record values to Polars columns, in bulk: JSON (against a schema) and raw bytes.

:func:`decode_json` joins a batch's values with newlines and parses them with one
``pl.read_ndjson(..., schema=schema)`` call. Only when that fails does it look for the culprits,
by bisection: each half is parsed in bulk again, so ``k`` bad values among ``n`` cost about
``k * log2(n)`` parser calls, never one per record. A single value that still fails is classified
(empty, not UTF-8, invalid JSON, not an object, does not match the schema) into a
:class:`Failure`. After parsing, a *required* field that is absent or null makes its row a failure
too (``pl.read_ndjson`` reads an absent field as null, so the two cannot be told apart).

Type coercion is Polars' NDJSON reader's: integers are accepted into Float columns, and numbers,
booleans, objects and arrays into String columns become their JSON text; anything else that does
not fit its column (a string or a float into an Int64 column, an integer too big for it) fails.
Fields not in the schema are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import polars as pl

__all__ = ["PARSE_ERRORS", "Decoded", "Failure", "decode_json", "decode_raw"]

Value = bytes | None

#: Exceptions by which Polars' NDJSON reader rejects input (a panic is a reader bug on odd input).
PARSE_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException)

_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


@dataclass(frozen=True)
class Failure:
    """The value at ``index`` of the input could not be decoded, because of ``reason``."""

    index: int
    reason: str


@dataclass(frozen=True)
class Decoded:
    """Decoded rows (input order) and the inputs that failed.

    ``good`` lists the input index of each row of ``frame``; ``None`` means every input decoded
    (the common case, which then costs no index bookkeeping).
    """

    frame: pl.DataFrame
    good: list[int] | None
    failures: list[Failure]


def decode_raw(values: Sequence[Value]) -> pl.DataFrame:
    """Values as one ``value`` column of type Binary (a null value stays null)."""
    return pl.DataFrame({"value": pl.Series("value", values, dtype=pl.Binary())})


def decode_json(
    values: Sequence[Value], schema: pl.Schema, required: Collection[str] | None = None
) -> Decoded:
    """Parse JSON object values against ``schema``; ``required`` fields (default: all) must be
    present and non-null."""
    required_columns = list(schema) if required is None else [c for c in schema if c in required]
    parts: list[tuple[int, int, pl.DataFrame]] = []
    failures: list[Failure] = []
    _bisect(values, 0, len(values), schema, parts, failures)
    if not parts:
        frame = pl.DataFrame(schema=schema)
    elif len(parts) == 1:
        frame = parts[0][2]
    else:
        frame = pl.concat([p[2] for p in parts], how="vertical")
    good = None if not failures else [i for lo, hi, _ in parts for i in range(lo, hi)]
    if required_columns and frame.height:
        frame, good, missing = _drop_missing(frame, good, required_columns)
        if missing:
            failures = sorted(failures + missing, key=lambda f: f.index)
    return Decoded(frame, good, failures)


def _bisect(
    values: Sequence[Value],
    lo: int,
    hi: int,
    schema: pl.Schema,
    parts: list[tuple[int, int, pl.DataFrame]],
    failures: list[Failure],
) -> None:
    """Append parsed runs of ``values[lo:hi]`` to ``parts`` and the bad values to ``failures``,
    both in input order."""
    if lo >= hi:
        return
    frame = _parse_run(values[lo:hi], schema)
    if frame is not None:
        parts.append((lo, hi, frame))
        return
    if hi - lo == 1:
        single = _parse_single(values[lo], schema)
        if isinstance(single, pl.DataFrame):
            parts.append((lo, hi, single))
        else:
            failures.append(Failure(lo, single))
        return
    mid = (lo + hi) // 2
    _bisect(values, lo, mid, schema, parts, failures)
    _bisect(values, mid, hi, schema, parts, failures)


def _parse_run(run: Sequence[Value], schema: pl.Schema) -> pl.DataFrame | None:
    """One bulk parse; ``None`` unless it yields exactly one row per value.

    A newline inside a value (pretty-printed JSON) or an empty value would shift rows against
    values, so the line count and the row count are both checked.
    """
    if None in run:
        return None
    joined = b"\n".join(run)  # type: ignore[arg-type]  # no None: checked above
    if joined.count(b"\n") != len(run) - 1:
        return None
    try:
        frame = pl.read_ndjson(joined, schema=schema)
    except PARSE_ERRORS:
        return None
    return frame if frame.height == len(run) else None


def _parse_single(value: Value, schema: pl.Schema) -> pl.DataFrame | str:
    """The one-row frame of a value the bulk path rejected, or the reason it is undecodable."""
    if value is None or not value.strip():
        return "empty value"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(parsed, dict):
        return f"not a JSON object: {_JSON_TYPE_NAMES.get(type(parsed), 'a value')}"
    compact = json.dumps(parsed).encode() if b"\n" in value else value
    try:
        frame = pl.read_ndjson(compact, schema=schema)
    except PARSE_ERRORS as exc:
        lines = str(exc).strip().splitlines()
        return f"does not match the schema: {lines[0] if lines else type(exc).__name__}"
    if frame.height != 1:
        return "does not match the schema: not one row"
    return frame


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _drop_missing(
    frame: pl.DataFrame, good: list[int] | None, required: list[str]
) -> tuple[pl.DataFrame, list[int] | None, list[Failure]]:
    """Remove rows whose required fields are absent or null; they become failures."""
    bad = frame.select(pl.any_horizontal(pl.col(required).is_null())).to_series()
    if not bad.any():
        return frame, good, []
    names = frame.select(
        pl.concat_str(
            [pl.when(pl.col(c).is_null()).then(pl.lit(c)) for c in required],
            separator=", ",
            ignore_nulls=True,
        )
    ).to_series()
    indices = good if good is not None else list(range(frame.height))
    failures = [
        Failure(indices[row], f"missing or null field(s): {names[row]}")
        for row in bad.arg_true().to_list()
    ]
    keep = ~bad
    kept_indices = [i for i, k in zip(indices, keep.to_list(), strict=True) if k]
    return frame.filter(keep), kept_indices, failures
