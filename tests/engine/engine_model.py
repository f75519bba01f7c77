"""Shared test helpers: random event streams, an independent lateness model, DuckDB reference."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import duckdb
import polars as pl
from hypothesis import strategies as st

from strom.connectors import MemorySink, MemorySource
from strom.pipeline import Hopping, Pipeline, Session, Tumbling, WindowSpec, agg

SCHEMA = pl.Schema({"id": pl.Int64(), "k": pl.String(), "ts": pl.Int64(), "v": pl.Int64()})
AGGS = (agg.count(), agg.sum("v"), agg.min("v"), agg.max("v"), agg.mean("v"))
RESULT_COLUMNS = ["k", "window_start", "window_end", "count", "sum_v", "min_v", "max_v", "mean_v"]

Partitions = list[list[list[dict[str, object]]]]


@dataclass
class Scenario:
    partitions: Partitions  # partition -> batches -> rows
    spec: WindowSpec
    ooo: int
    lateness: int


@st.composite
def scenarios(draw: st.DrawFn, *, late_events: bool, sessions: bool = False) -> Scenario:
    """1-4 partitions of events in random micro-batches, windowed by a tumbling, hopping or
    (with ``sessions``) session window.

    Each event lies within ``ooo`` behind its partition's frontier (so never late) unless
    ``late_events``, when some events fall far behind.
    """
    ooo = draw(st.integers(0, 3_000))
    lateness = draw(st.sampled_from([0, 2_000, 7_000]))
    kind = draw(
        st.sampled_from(["tumbling", "hopping", "session"] if sessions else ["tumbling", "hopping"])
    )
    if kind == "session":
        spec: WindowSpec = Session(draw(st.sampled_from([500, 2_000, 5_000])))
    elif kind == "tumbling":
        spec = Tumbling(draw(st.sampled_from([1_000, 5_000, 10_000])))
    else:
        size = draw(st.sampled_from([4_000, 6_000, 10_000]))
        spec = Hopping(size, draw(st.sampled_from([1_000, 2_000, 3_000, size])))
    next_id = 0
    partitions: Partitions = []
    for _ in range(draw(st.integers(1, 4))):
        frontier = draw(st.integers(-20_000, 20_000))
        rows: list[dict[str, object]] = []
        for _ in range(draw(st.integers(0, 30))):
            frontier += draw(st.integers(0, 3_000))
            back = draw(st.integers(0, ooo))
            if late_events and draw(st.integers(0, 5)) == 0:
                back = draw(st.integers(0, ooo + lateness + 25_000))
            rows.append(
                {
                    "id": next_id,
                    "k": draw(st.sampled_from("abc")),
                    "ts": frontier - back,
                    "v": draw(st.integers(-100, 100)),
                }
            )
            next_id += 1
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(rows) - 1)), max_size=6)))
        bounds = [0, *[c for c in cuts if c < len(rows)], len(rows)]
        partitions.append([rows[a:b] for a, b in itertools.pairwise(bounds) if b > a])
    return Scenario(partitions, spec, ooo, lateness)


def windows_of(ts: int, spec: WindowSpec) -> list[tuple[int, int]]:
    if isinstance(spec, Tumbling):
        start = ts - ts % spec.size_ms
        return [(start, start + spec.size_ms)]
    assert isinstance(spec, Hopping)
    out = []
    start = ts - ts % spec.slide_ms
    while start + spec.size_ms > ts:
        out.append((start, start + spec.size_ms))
        start -= spec.slide_ms
    return out


def late_pairs(s: Scenario) -> set[tuple[int, int]]:
    """(event id, window_start) pairs the documented semantics drop, modelled independently:
    round-robin polls; a row is judged against the watermark before its batch; a partition
    is finished one poll after its last batch; watermark = min over unfinished partitions of
    (max ts seen - ooo), monotone."""
    NEG = -(2**63)
    max_seen: list[int | None] = [None] * len(s.partitions)
    finished = [False] * len(s.partitions)
    cursor = [0] * len(s.partitions)
    wm = NEG
    late: set[tuple[int, int]] = set()
    while not all(finished):
        for p, batches in enumerate(s.partitions):
            if finished[p]:
                continue
            if cursor[p] == len(batches):
                finished[p] = True
            else:
                batch = batches[cursor[p]]
                cursor[p] += 1
                for row in batch:
                    ts = row["ts"]
                    assert isinstance(ts, int)
                    for start, end in windows_of(ts, s.spec):
                        if end + s.lateness <= wm:
                            late.add((int(str(row["id"])), start))
                top = max(int(str(r["ts"])) for r in batch)
                max_seen[p] = top if max_seen[p] is None else max(top, max_seen[p] or top)
            live = [
                (m - s.ooo) if m is not None else NEG
                for m, f in zip(max_seen, finished, strict=True)
                if not f
            ]
            wm = max(wm, min(live)) if live else 2**63 - 1
    return late


def build(
    s: Scenario, partitions: Partitions | None = None
) -> tuple[Pipeline, MemorySink, MemorySink]:
    p = Pipeline()
    source = MemorySource(partitions if partitions is not None else s.partitions, schema=SCHEMA)
    stream = p.source(source, timestamp="ts", max_out_of_orderness_ms=s.ooo)
    out = stream.key_by("k").window(s.spec, allowed_lateness_ms=s.lateness).agg(*AGGS)
    out.sink(results := MemorySink())
    out.late().sink(late := MemorySink())
    return p, results, late


def reference(s: Scenario, dropped: set[tuple[int, int]]) -> pl.DataFrame:
    """The expected results, by DuckDB SQL over every (event, window) pair not dropped."""
    events = pl.DataFrame(
        [r for part in s.partitions for batch in part for r in batch], schema=SCHEMA
    )
    drops = pl.DataFrame(sorted(dropped), schema={"id": pl.Int64, "ws": pl.Int64}, orient="row")
    if isinstance(s.spec, Session):
        assert not dropped, "the session reference has no lateness model"
        return _session_reference(events, s.spec.gap_ms)
    if isinstance(s.spec, Tumbling):
        size, slide = s.spec.size_ms, s.spec.size_ms
    else:
        assert isinstance(s.spec, Hopping)
        size, slide = s.spec.size_ms, s.spec.slide_ms
    con = duckdb.connect()
    con.register("events", events.to_arrow())
    con.register("drops", drops.to_arrow())
    sql = f"""
        WITH pairs AS (
            SELECT e.*, (e.ts - ((e.ts % {slide}) + {slide}) % {slide}) - j * {slide} AS ws
            FROM events e, range(0, {-(-size // slide)}) AS r(j)
        ), kept AS (
            SELECT * FROM pairs
            WHERE ws + {size} > ts AND NOT EXISTS (
                SELECT 1 FROM drops d WHERE d.id = pairs.id AND d.ws = pairs.ws)
        )
        SELECT k, ws AS window_start, ws + {size} AS window_end, count(*) AS count,
               sum(v) AS sum_v, min(v) AS min_v, max(v) AS max_v, avg(v) AS mean_v
        FROM kept GROUP BY k, ws ORDER BY window_end, window_start, k
    """
    return pl.from_arrow(con.sql(sql).to_arrow_table()).cast(_RESULT_TYPES)  # type: ignore[union-attr]


_RESULT_TYPES = {
    "window_start": pl.Int64,
    "window_end": pl.Int64,
    "count": pl.Int64,
    "sum_v": pl.Int64,
    "min_v": pl.Int64,
    "max_v": pl.Int64,
    "mean_v": pl.Float64,
}


def _session_reference(events: pl.DataFrame, gap: int) -> pl.DataFrame:
    """Sessions by DuckDB SQL (gaps and islands): per key in time order, an event at least
    ``gap`` after the previous one starts a new session, which ends ``gap`` after its last."""
    con = duckdb.connect()
    con.register("events", events.to_arrow())
    sql = f"""
        WITH marked AS (
            SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY k ORDER BY ts) < {gap}
                           THEN 0 ELSE 1 END AS opens
            FROM events
        ), numbered AS (
            SELECT *, sum(opens) OVER (PARTITION BY k ORDER BY ts, opens DESC
                                       ROWS UNBOUNDED PRECEDING) AS session
            FROM marked
        )
        SELECT k, min(ts) AS window_start, max(ts) + {gap} AS window_end, count(*) AS count,
               sum(v) AS sum_v, min(v) AS min_v, max(v) AS max_v, avg(v) AS mean_v
        FROM numbered GROUP BY k, session ORDER BY window_end, window_start, k
    """
    return pl.from_arrow(con.sql(sql).to_arrow_table()).cast(_RESULT_TYPES)  # type: ignore[union-attr]


def canonical(df: pl.DataFrame) -> pl.DataFrame:
    if df.height == 0:
        return pl.DataFrame(schema={c: pl.Int64 for c in RESULT_COLUMNS}).cast({"k": pl.String})
    return df.select(RESULT_COLUMNS).sort("window_end", "window_start", "k")
