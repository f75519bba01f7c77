"""The demo's correctness check: recompute every window from the generated events, with Polars
alone (no strom code), and compare with what the pipeline wrote.

The engine decides which events were late (that depends on how partitions interleave), so the
check takes the late table as given but holds it to what the generator guarantees: only readings
generated late may be late (an on-time or out-of-order reading never is). Everything else must
match exactly: each window's count and maxima, its mean to 1e-9, its device columns, the set of
windows alerted, and the dead letters (one per malformed record).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from strom.demo.generator import VIBRATION_SPIKE, WINDOW_MS

KEY = ["device", "window_start"]
COMPARED = ["count", "mean_temp", "max_temp", "max_vibration", "site", "model", "temp_limit"]


@dataclass(frozen=True)
class Outcome:
    """What a run left behind: SQLite tables and the alerts read back from Kafka."""

    windows: pl.DataFrame
    late: pl.DataFrame
    dead_letters: int
    alerts: pl.DataFrame


def read_table(db: Path, table: str) -> pl.DataFrame | None:
    """All rows of ``table`` (``None`` if it was never created: nothing was written to it)."""
    with closing(sqlite3.connect(db)) as conn:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if not exists:
            return None
        cursor = conn.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)


def expected_windows(events: pl.DataFrame, devices: pl.DataFrame, late: pl.Series) -> pl.DataFrame:
    """Per device and 10 s tumbling window over the valid readings not in ``late`` (seqs)."""
    on_time = events.filter((pl.col("kind") != "malformed") & ~pl.col("seq").is_in(late.implode()))
    return (
        on_time.with_columns(window_start=pl.col("ts") - pl.col("ts") % WINDOW_MS)
        .group_by(KEY)
        .agg(
            pl.len().cast(pl.Int64).alias("count"),
            pl.col("temp").mean().alias("mean_temp"),
            pl.col("temp").max().alias("max_temp"),
            pl.col("vibration").max().alias("max_vibration"),
        )
        .join(devices, on="device", how="left")
        .sort(KEY)
    )


def alerted(windows: pl.DataFrame) -> set[tuple[str, int]]:
    """The windows that must raise an alert."""
    hot = (pl.col("max_temp") > pl.col("temp_limit")) | (pl.col("max_vibration") > VIBRATION_SPIKE)
    return {(d, int(w)) for d, w in windows.filter(hot).select(KEY).iter_rows()}


def verify(events: pl.DataFrame, devices: pl.DataFrame, outcome: Outcome) -> list[str]:
    """Every way ``outcome`` differs from the independent recomputation (empty: correct)."""
    problems: list[str] = []
    late_seqs = outcome.late.get_column("seq").unique() if outcome.late.height else pl.Series([])
    allowed = set(events.filter(pl.col("late")).get_column("seq").to_list())
    wrongly_late = sorted(set(late_seqs.to_list()) - allowed)
    if wrongly_late:
        problems.append(f"{len(wrongly_late)} on-time reading(s) went late: seq {wrongly_late[:5]}")
    expected = expected_windows(events, devices, late_seqs.cast(pl.Int64))
    actual = outcome.windows.select(KEY + COMPARED).sort(KEY) if outcome.windows.height else None
    if actual is None:
        return [*problems, f"no windows were written; expected {expected.height}"]
    joined = expected.join(actual, on=KEY, how="full", suffix="_got", coalesce=True)
    missing = joined.filter(pl.col("count_got").is_null()).height
    extra = joined.filter(pl.col("count").is_null()).height
    if missing or extra:
        problems.append(f"windows: {missing} missing, {extra} unexpected")
    both = joined.filter(pl.col("count").is_not_null() & pl.col("count_got").is_not_null())
    for column in COMPARED:
        a, b = pl.col(column), pl.col(f"{column}_got")
        if column == "mean_temp":
            differs = (a - b).abs() > 1e-9 * pl.max_horizontal(a.abs(), pl.lit(1.0))
        else:
            differs = a.ne_missing(b)
        bad = both.filter(differs)
        if bad.height:
            first = bad.row(0, named=True)
            problems.append(
                f"{bad.height} window(s) differ in {column}, e.g. {first['device']} "
                f"@{first['window_start']}: expected {first[column]}, got {first[column + '_got']}"
            )
    if outcome.alerts.height:
        got_alerts = {(d, int(w)) for d, w in outcome.alerts.select(KEY).iter_rows()}
    else:
        got_alerts = set()
    want_alerts = alerted(expected)
    if got_alerts != want_alerts:
        problems.append(
            f"alerts: {len(want_alerts - got_alerts)} missing, "
            f"{len(got_alerts - want_alerts)} unexpected"
        )
    malformed = events.filter(pl.col("kind") == "malformed").height
    if outcome.dead_letters != malformed:
        problems.append(f"dead letters: expected {malformed}, got {outcome.dead_letters}")
    return problems
