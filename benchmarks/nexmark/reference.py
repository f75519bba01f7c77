"""Each query's expected output, computed with DuckDB SQL over the generated frames, and
:func:`compare`, which checks a system's output against it (as multisets, floats to a tolerance)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import polars as pl

from benchmarks.nexmark.generator import Events
from benchmarks.nexmark.queries import OUTPUT_COLUMNS, SLIDE_MS, WINDOW_MS

__all__ = ["SQL", "Comparison", "compare", "expected"]

_HOPS = math.ceil(WINDOW_MS / SLIDE_MS)

SQL: dict[str, str] = {
    "q0": "SELECT * FROM bid",
    "q1": """
        SELECT auction, bidder, CAST(price AS DOUBLE) * 0.908 AS price, dateTime, extra FROM bid
    """,
    "q2": "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    "q3": """
        SELECT p.name, p.city, p.state, a.id
        FROM auction a JOIN person p ON a.seller = p.id
        WHERE a.category = 10 AND p.state IN ('OR', 'ID', 'CA')
    """,
    "q4": """
        WITH finals AS (
            SELECT a.id, a.category, max(b.price) AS final
            FROM auction a JOIN bid b
              ON a.id = b.auction AND b.dateTime BETWEEN a.dateTime AND a.expires
            GROUP BY a.id, a.category
        )
        SELECT category, avg(final) AS avg_final FROM finals GROUP BY category
    """,
    "q5": f"""
        WITH assigned AS (
            SELECT auction, dateTime - dateTime % {SLIDE_MS} - k * {SLIDE_MS} AS window_start
            FROM bid, range({_HOPS}) AS hops(k)
        ),
        counts AS (
            SELECT auction, window_start, count(*) AS num
            FROM assigned
            WHERE window_start + {WINDOW_MS} > 0
            GROUP BY auction, window_start
        ),
        best AS (SELECT window_start, max(num) AS top FROM counts GROUP BY window_start)
        SELECT c.auction, c.num, c.window_start, c.window_start + {WINDOW_MS} AS window_end
        FROM counts c JOIN best b ON c.window_start = b.window_start AND c.num = b.top
    """,
    "q7": f"""
        WITH windowed AS (
            SELECT *, dateTime - dateTime % {WINDOW_MS} + {WINDOW_MS} AS window_end FROM bid
        ),
        best AS (SELECT window_end, max(price) AS top FROM windowed GROUP BY window_end)
        SELECT w.auction, w.price, w.bidder, w.dateTime, w.extra, w.window_end
        FROM windowed w JOIN best b ON w.window_end = b.window_end AND w.price = b.top
    """,
    "q8": f"""
        SELECT DISTINCT p.id, p.name, p.dateTime - p.dateTime % {WINDOW_MS} AS window_start
        FROM person p JOIN auction a
          ON p.id = a.seller
         AND p.dateTime - p.dateTime % {WINDOW_MS} = a.dateTime - a.dateTime % {WINDOW_MS}
    """,
}


def expected(query: str, events: Events) -> pl.DataFrame:
    """``query``'s output over ``events``, by DuckDB."""
    con = duckdb.connect()
    try:
        for kind, frame in events.frames().items():
            con.register(kind, frame.to_arrow())
        result: pl.DataFrame = con.sql(SQL[query]).pl()
        return result.select(OUTPUT_COLUMNS[query])
    finally:
        con.close()


@dataclass(frozen=True)
class Comparison:
    correct: bool
    detail: str | None = None
    """What differs (``None`` when correct)."""


def _canonical(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    frame = frame.select(columns)
    floats = [c for c in columns if frame.schema[c].is_float() or frame.schema[c].is_decimal()]
    casts = [
        pl.col(c).cast(pl.Float64)
        if c in floats
        else pl.col(c).cast(pl.Int64)
        if frame.schema[c].is_integer()
        else pl.col(c)
        for c in columns
    ]
    frame = frame.select(casts)
    exact = [c for c in columns if c not in floats]
    return frame.sort([*exact, *floats], nulls_last=True)


def compare(
    query: str, actual: pl.DataFrame | None, reference: pl.DataFrame, rel_tol: float = 1e-9
) -> Comparison:
    """Whether ``actual`` holds exactly ``reference``'s rows (any order; floats within
    ``rel_tol``), on the query's output columns."""
    columns = OUTPUT_COLUMNS[query]
    if actual is None:
        return Comparison(False, "no output")
    if actual.height == 0 and reference.height == 0:  # an empty sink may have no columns
        return Comparison(True)
    missing = [c for c in columns if c not in actual.columns]
    if missing:
        return Comparison(False, f"missing columns {missing}")
    if actual.height != reference.height:
        return Comparison(False, f"{actual.height} rows, expected {reference.height}")
    if actual.height == 0:
        return Comparison(True)
    a = _canonical(actual, columns)
    r = _canonical(reference, columns)
    for c in columns:
        left, right = a[c], r[c]
        if left.dtype.is_float() or right.dtype.is_float():  # decimals became Float64
            lv = left.cast(pl.Float64)
            rv = right.cast(pl.Float64)
            tol = (rv.abs() * rel_tol).clip(lower_bound=1e-9)
            bad = ((lv - rv).abs() > tol) | (lv.is_null() != rv.is_null())
            bad = bad.fill_null(False)
        else:
            if left.dtype != right.dtype:
                return Comparison(False, f"column {c}: type {left.dtype}, expected {right.dtype}")
            bad = left.ne_missing(right)
        if bad.any():
            i = int(bad.arg_true()[0])
            return Comparison(
                False,
                f"column {c}: {int(bad.sum())} rows differ, e.g. row {a.row(i)} vs {r.row(i)}",
            )
    return Comparison(True)
