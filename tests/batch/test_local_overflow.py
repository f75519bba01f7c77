"""Integer sums on the local engine: map tasks' partials (Int128 in the shuffle files) merged
in reduce tasks are exact, at Int64's bounds too, and a sum outside the range fails the run
naming the aggregation, the sum and the group, as the single-process runner does."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from strom import FileSource, MemorySink, Pipeline, Tumbling, agg, run_bounded
from strom.batch import TaskFailed, run_local
from strom.engine.overflow import INT64_MAX, INT64_MIN, SumOverflowError

M, N = INT64_MAX, INT64_MIN


def _files(tmp: Path, files: list[list[int | None]], dtype: pl.DataType) -> str:
    """One Parquet file per list (one map task each): key 1 gets the values, key 2 a 1."""
    for i, values in enumerate(files):
        frame = pl.DataFrame(
            {"k": [1] * len(values) + [2], "ts": list(range(len(values) + 1)), "x": [*values, 1]},
            schema={"k": pl.Int64, "ts": pl.Int64, "x": dtype},
        )
        frame.write_parquet(tmp / f"part-{i}.parquet")
    return str(tmp / "part-*.parquet")


def _pipeline(glob: str, window: bool, sink: MemorySink, sum_only: bool = False) -> Pipeline:
    """A sum and a mean per key (window), or the sum alone (a keyed aggregation of only
    count/sum/min/max merges its partials in one Polars group-by: the columnar path)."""
    p = Pipeline()
    source = p.source(FileSource(glob, "parquet"), timestamp="ts").key_by("k")
    aggs = (agg.sum("x"),) if sum_only else (agg.sum("x"), agg.mean("x"))
    (source.window(Tumbling(1_000)).agg(*aggs) if window else source.agg(*aggs)).sink(sink)
    return p


@pytest.mark.parametrize("window", [False, True], ids=["keyed", "window"])
@pytest.mark.parametrize(
    ("files", "dtype", "total"),
    [
        ([[M - 1], [1]], pl.Int64(), M),
        ([[N + 1], [-1]], pl.Int64(), N),
        ([[M, M], [M], [-M, -M, -M, 9]], pl.Int64(), 9),
        ([[2**63 - 2, None], [1]], pl.UInt64(), M),
        ([[2**31 - 1] * 3, [2**31 - 1]], pl.Int32(), 4 * (2**31 - 1)),
    ],
    ids=["top", "bottom", "out and back", "uint64", "int32"],
)
def test_partials_merged_across_tasks_are_exact(
    tmp_path: Path, files: list[list[int | None]], dtype: pl.DataType, total: int, window: bool
) -> None:
    glob = _files(tmp_path, files, dtype)
    run_local(_pipeline(glob, window, sink := MemorySink()), workers=2, memory="2GiB")
    got = sink.to_frame().sort("k")
    assert got.schema["sum_x"] == pl.Int64
    assert got["sum_x"].to_list() == [total, len(files)]
    run_bounded(_pipeline(glob, window, single := MemorySink()))
    assert single.to_frame().sort("k").equals(got)


@pytest.mark.parametrize("window", [False, True], ids=["keyed", "window"])
@pytest.mark.parametrize(
    ("files", "total"),
    [([[M], [1]], M + 1), ([[N, -1]], N - 1), ([[M // 2 + 1]] * 4, 4 * (M // 2 + 1))],
    ids=["after the merge", "negative, in one task", "every task"],
)
def test_a_sum_outside_int64_fails_the_run_naming_it(
    tmp_path: Path, files: list[list[int | None]], total: int, window: bool
) -> None:
    glob = _files(tmp_path, files, pl.Int64())
    expected = f"agg.sum('x') into column 'sum_x': the sum {total} is outside Int64's range"
    with pytest.raises(TaskFailed, match=r"SumOverflowError") as raised:
        run_local(
            _pipeline(glob, window, MemorySink()), workers=2, memory="2GiB", max_task_attempts=1
        )
    assert expected in str(raised.value) and "for k=1" in str(raised.value)
    with pytest.raises(SumOverflowError, match=r"for k=1") as single:
        run_bounded(_pipeline(glob, window, MemorySink()))
    assert expected in str(single.value)


@pytest.mark.parametrize(
    ("files", "total"), [([[M], [1]], M + 1), ([[N], [-1]], N - 1)], ids=["up", "down"]
)
def test_the_columnar_merge_checks_sums_too(
    tmp_path: Path, files: list[list[int | None]], total: int
) -> None:
    glob = _files(tmp_path, files, pl.Int64())
    with pytest.raises(TaskFailed, match=rf"the sum {total} is outside Int64's range.*k=1"):
        run_local(
            _pipeline(glob, False, MemorySink(), sum_only=True),
            workers=2,
            memory="2GiB",
            max_task_attempts=1,
        )
    back = _files(tmp_path, [[M], [M], [-M, -M, 5]], pl.Int64())
    run_local(_pipeline(back, False, sink := MemorySink(), sum_only=True), workers=2)
    assert sink.to_frame().sort("k")["sum_x"].to_list() == [5, 3]
