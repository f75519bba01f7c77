"""Top-k and distinct on the local engine equal the single-process bounded runner's results
(top-k row for row, in order; distinct as a set of rows, each the first of its value)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from strom import MemorySink, Pipeline, run_bounded
from strom.batch import run_local
from strom.connectors import FileSource
from strom.pipeline.stream import Stream


def run_both(build) -> tuple[pl.DataFrame, pl.DataFrame]:  # type: ignore[no-untyped-def]
    single, parallel = MemorySink(), MemorySink()
    run_bounded(build(single))
    run_local(build(parallel), workers=2, memory="2GiB")
    a, b = single.to_frame(), parallel.to_frame()
    assert a.schema == b.schema
    return a, b


def with_nulls(directory: Path, files: int = 16, rows: int = 2_000) -> Path:
    """Events with many ties in ``k`` and ``v`` and some nulls in both."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for i in range(files):
        k = rng.integers(0, 30, rows).astype(object)
        k[rng.random(rows) < 0.05] = None
        v = rng.integers(0, 5, rows).astype(object)
        v[rng.random(rows) < 0.05] = None
        pl.DataFrame(
            {
                "ts": rng.integers(0, 1_000, rows),
                "k": pl.Series(k.tolist(), dtype=pl.Int64),
                "v": pl.Series(v.tolist(), dtype=pl.Int64),
                "row": np.arange(rows) + i * rows,
            }
        ).write_parquet(directory / f"part-{i:05d}.parquet")
    return directory


def stream(p: Pipeline, glob: str, partitions: int = 3) -> Stream:
    return p.source(FileSource(glob, "parquet", partitions=partitions), timestamp="ts")


@pytest.mark.parametrize(
    ("k", "descending", "nulls_last"),
    [(50, True, True), (7, [False, True], False), (10_000, False, True), (0, True, True)],
)
def test_top_k_equals_the_single_process_runner(
    tmp_path: Path, k: int, descending: bool | list[bool], nulls_last: bool
) -> None:
    directory = with_nulls(tmp_path / "events")

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        events = stream(p, str(directory / "*.parquet")).filter(pl.col("ts") > 10)
        events.top_k(k, by=["k", "v"], descending=descending, nulls_last=nulls_last).select(
            "k", "v", "row"
        ).sink(sink)
        return p

    single, parallel = run_both(build)
    assert single.height == min(k, single.height) and (k == 0 or single.height > 0)
    assert single.equals(parallel)  # the same rows in the same order: ties in input order


def test_top_k_of_a_union_breaks_ties_in_branch_order(tmp_path: Path) -> None:
    directory = with_nulls(tmp_path / "a", files=4)

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        # one source twice: both branches have the same partitions and positions, so only
        # the branch order (the union's inputs in turn) breaks their ties
        events = stream(p, str(directory / "*.parquet"), partitions=2)
        again = events.with_columns(pl.col("row") + 1_000_000)
        events.union(again).top_k(2_000, by="v").sink(sink)
        return p

    single, parallel = run_both(build)
    assert single.get_column("row").max() >= 1_000_000  # ties at the top value take both
    assert single.equals(parallel)


@pytest.mark.parametrize("columns", [(), ("k",), ("k", "v")])
def test_distinct_equals_the_single_process_runner(
    tmp_path: Path, columns: tuple[str, ...]
) -> None:
    directory = with_nulls(tmp_path / "events")

    def build(sink: MemorySink) -> Pipeline:
        p = Pipeline()
        events = stream(p, str(directory / "*.parquet"))
        if not columns:  # whole rows: repeat some
            events = events.select("k", "v").union(
                stream(p, str(directory / "part-0000[0-3].parquet")).select("k", "v")
            )
        events.distinct(*columns).sink(sink)
        return p

    single, parallel = run_both(build)
    assert single.height > 10
    assert single.get_column("k").null_count() > 0  # null is a value like any other
    # the first row of each value (``row`` tells which one); rows in any order
    order = single.columns
    assert single.sort(order, nulls_last=True).equals(parallel.sort(order, nulls_last=True))
