"""Which source columns a plan reads (strom.engine.projection): exactly what the steps it sees
through name, and every column after anything else."""

from __future__ import annotations

import polars as pl
import polars.selectors as cs
import pytest

from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg
from strom.engine.projection import read_columns
from strom.pipeline import Stream

ROWS = [{"a": 1, "b": 2, "c": 3, "ts": 10}]


def _reads(build: object, timestamp: str | None = None) -> frozenset[str] | None:
    p = Pipeline()
    stream = p.source(MemorySource([ROWS]), timestamp=timestamp)
    assert callable(build)
    build(stream)
    (columns,) = read_columns(p.plan()).values()
    return columns


def _sink(s: Stream) -> None:
    s.sink(MemorySink())


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda s: _sink(s.select("a")), {"a"}),
        (lambda s: _sink(s.filter(pl.col("b") > 0).select("a")), {"a", "b"}),
        (lambda s: _sink(s.with_columns(d=pl.col("c") * 2).select("a", "d")), {"a", "c", "d"}),
        (lambda s: _sink(s.select(x=pl.col("a").filter(pl.col("b") > 1).sum())), {"a", "b"}),
        (lambda s: _sink(s.select(pl.lit(1).alias("one"))), set()),
        # what follows a select reads only the select's output
        (lambda s: _sink(s.select("a").map_batches(lambda f: f)), {"a"}),
        # two branches: what either reads
        (lambda s: (_sink(s.select("a")), _sink(s.filter(pl.col("c") > 0).select("b"))),
         {"a", "b", "c"}),
        # key_by: its keys, then what the step after it reads (a window reads everything)
        (lambda s: _sink(s.select("a", "b").key_by("a").agg(agg.sum("b"))), {"a", "b"}),
    ],
)  # fmt: skip
def test_steps_it_sees_through_read_only_what_they_name(build: object, expected: set[str]) -> None:
    assert _reads(build) == frozenset(expected)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: _sink(s),  # a sink writes every column
        lambda s: _sink(s.filter(pl.col("a") > 0)),  # ... so does a sink after a filter
        lambda s: _sink(s.select(pl.all())),
        lambda s: _sink(s.select(pl.col("^[ab]$"))),
        lambda s: _sink(s.select(pl.nth(0))),
        lambda s: _sink(s.select(cs.numeric())),
        lambda s: _sink(s.select(pl.struct(pl.all()).alias("row"))),
        lambda s: _sink(s.select(pl.exclude("a"))),
        lambda s: _sink(s.map_batches(lambda f: f).select("a")),
        lambda s: _sink(s.with_columns(pl.col("a", "b") + 1).select("c")),
        lambda s: _sink(s.key_by("a").window(Tumbling(10)).agg(agg.count()).select("a")),
        lambda s: _sink(s.union(s).select("a")),
    ],
)
def test_anything_it_cannot_see_through_reads_every_column(build: object) -> None:
    assert _reads(build, timestamp="ts") is None


def test_the_event_time_column_is_always_read() -> None:
    assert _reads(lambda s: _sink(s.select("a")), timestamp="ts") == {"a", "ts"}
