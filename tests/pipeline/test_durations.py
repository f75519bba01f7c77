"""Spans of time are integer milliseconds or ``datetime.timedelta``, everywhere in the API."""

from __future__ import annotations

from datetime import timedelta

import pytest

from strom import Hopping, MemorySink, MemorySource, Pipeline, Session, Tumbling, agg
from strom.pipeline.plan import IntervalJoinNode, LookupJoinNode, SourceNode, WindowAggNode
from strom.pipeline.windows import to_ms


def test_to_ms() -> None:
    assert to_ms(timedelta(days=1, milliseconds=7), "x") == 86_400_007
    assert to_ms(timedelta(milliseconds=-250), "x") == -250
    assert to_ms(0, "x") == 0


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (timedelta(microseconds=1_500), ValueError, "whole number of milliseconds"),
        (1.5, TypeError, "integer milliseconds or a datetime.timedelta"),
        (True, TypeError, "integer milliseconds"),
        ("10s", TypeError, "integer milliseconds"),
    ],
)
def test_to_ms_rejects(value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        to_ms(value, "size")  # type: ignore[arg-type]


def test_window_specs_take_timedelta() -> None:
    assert Tumbling(timedelta(seconds=10), timedelta(seconds=1)) == Tumbling(10_000, 1_000)
    assert Hopping(timedelta(minutes=1), timedelta(seconds=30)) == Hopping(60_000, 30_000)
    assert Session(timedelta(seconds=5)).gap_ms == 5_000
    assert Tumbling(size_ms=timedelta(seconds=1)).size_ms == 1_000
    with pytest.raises(ValueError, match="positive"):
        Tumbling(timedelta(0))
    with pytest.raises(ValueError, match="positive"):
        Session(timedelta(seconds=-1))


def test_stream_spans_take_timedelta() -> None:
    p = Pipeline()
    src = p.source(
        MemorySource([[{"ts": 1, "k": "a", "v": 1}]]),
        timestamp="ts",
        max_out_of_orderness_ms=timedelta(seconds=2),
        idle_timeout_ms=timedelta(seconds=3),
    )
    other = p.source(MemorySource([[{"ts": 1, "k": "a", "w": 1}]]), timestamp="ts")
    joined = src.interval_join(
        other, on="k", lower_ms=timedelta(seconds=-1), upper_ms=timedelta(seconds=1)
    )
    windowed = (
        joined.key_by("k")
        .window(Tumbling(timedelta(seconds=10)), allowed_lateness_ms=timedelta(seconds=4))
        .agg(agg.count())
    )
    windowed.sink(MemorySink())
    nodes = p.plan().nodes()
    (source,) = [n for n in nodes if isinstance(n, SourceNode) and n.name == "source0"]
    assert (source.max_out_of_orderness_ms, source.idle_timeout_ms) == (2_000, 3_000)
    (join,) = [n for n in nodes if isinstance(n, IntervalJoinNode)]
    assert (join.lower_ms, join.upper_ms) == (-1_000, 1_000)
    (window,) = [n for n in nodes if isinstance(n, WindowAggNode)]
    assert window.allowed_lateness_ms == 4_000


def test_lookup_ttl_takes_timedelta(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    from strom import SQLiteTable

    db = Path(str(tmp_path)) / "t.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, name TEXT)")
    p = Pipeline()
    src = p.source(MemorySource([[{"k": "a"}]]))
    src.lookup_join(SQLiteTable(db, "t", key="k"), on="k", ttl_ms=timedelta(seconds=2)).sink(
        MemorySink()
    )
    (node,) = [n for n in p.plan().nodes() if isinstance(n, LookupJoinNode)]
    assert node.ttl_ms == 2_000


def test_spans_take_numpy_integers_and_refuse_overflowing_ones() -> None:
    import numpy as np

    assert to_ms(np.int64(250), "x") == 250
    assert Tumbling(np.int32(1_000)).size_ms == 1_000  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beyond what Int64 event times can hold"):
        Session(10**20)
