"""Bounded runs over directories of many small files equal the in-memory run."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from strom.bounded import run_bounded
from strom.connectors import FileReadError, FileSink, FileSource, MemorySink, MemorySource
from strom.pipeline import Hopping, Pipeline, Source, agg
from strom.runtime import run_streaming


def _events(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [(i * 7919) % 100_000 for i in range(n)],
            "device": [f"d{i % 5}" for i in range(n)],
            "temp": [float(i % 37) - 5.0 for i in range(n)],
            "x": list(range(n)),
        }
    )


def _pipeline(source: Source) -> tuple[Pipeline, MemorySink]:
    p = Pipeline()
    out = (
        p.source(source, timestamp="ts", max_out_of_orderness_ms=100_000)
        .filter(pl.col("temp") > 0)
        .with_columns(temp_f=pl.col("temp") * 1.8 + 32)
        .key_by("device")
        .window(Hopping(20_000, 10_000))
        .agg(agg.count(), agg.max("temp_f"), agg.sum("x"), agg.min("x"))
    )
    out.sink(sink := MemorySink())
    return p, sink


@pytest.mark.parametrize("fmt", ["parquet", "ndjson", "csv"])
def test_many_files_equal_in_memory(tmp_path: Path, fmt: str) -> None:
    events = _events(3_000)
    chunks = [events.slice(i, 50) for i in range(0, events.height, 50)]
    for i, chunk in enumerate(chunks):
        path = tmp_path / f"part-{i:03d}.{fmt}"
        getattr(chunk, f"write_{fmt}")(path)
    p, from_files = _pipeline(FileSource(str(tmp_path / f"*.{fmt}"), fmt, partitions=3))  # type: ignore[arg-type]
    run_bounded(p)
    q, from_memory = _pipeline(MemorySource([chunks]))
    run_bounded(q)
    order = ["window_end", "window_start", "device"]
    expected = from_memory.to_frame().sort(order)
    assert expected.height > 10
    assert from_files.to_frame().sort(order).equals(expected)
    r, streamed = _pipeline(FileSource(str(tmp_path / f"*.{fmt}"), fmt, partitions=2))  # type: ignore[arg-type]
    run_streaming(r)
    assert streamed.to_frame().sort(order).equals(expected)


def test_file_sink_round_trip(tmp_path: Path) -> None:
    p = Pipeline()
    src = MemorySource([[_events(100)]])
    p.source(src).filter(pl.col("x") < 10).sink(FileSink(tmp_path / "out", "parquet"))
    p.source(src).filter(pl.col("x") < 5).sink(FileSink(tmp_path / "nd", "ndjson"))
    run_streaming(p)
    assert pl.read_parquet(tmp_path / "out" / "*.parquet").height == 10
    assert pl.read_ndjson(tmp_path / "nd" / "part-0.ndjson").height == 5


def test_a_restarted_parquet_sink_adds_files_and_replaces_none(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for batch in ({"n": [1, 2]}, {"n": [3]}):  # two runs of a sink into one directory
        sink = FileSink(out, "parquet")
        sink.open()
        sink.write(pl.DataFrame(batch))
        sink.pre_commit(1)
        sink.close()
    names = sorted(p.name for p in out.iterdir())
    assert names == ["part-00000.parquet", "part-00001.parquet"]  # no temporary file is left
    assert sorted(pl.read_parquet(out / "*.parquet")["n"].to_list()) == [1, 2, 3]


BAD_FILES = {
    "parquet": b"PAR1 this is not parquet",
    "csv": b"ts,k,v\n1,a,not-a-number\n",  # v is Float64 in the other files
    "ndjson": b'{"ts": 1, "k": "a", "v": 1.0}\n{"ts": 2, "k": \n',  # truncated JSON
}


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson"])
@pytest.mark.parametrize("runner", [run_bounded, run_streaming])
def test_a_bad_file_among_many_is_named(tmp_path: Path, fmt: str, runner: object) -> None:
    for i in range(40):
        frame = pl.DataFrame({"ts": [i], "k": ["a"], "v": [float(i)]})
        path = tmp_path / f"part-{i:03d}.{fmt}"
        {"parquet": frame.write_parquet, "csv": frame.write_csv, "ndjson": frame.write_ndjson}[fmt](
            path
        )
    bad = tmp_path / f"part-017.{fmt}"
    bad.write_bytes(BAD_FILES[fmt])
    p = Pipeline()
    source = FileSource(str(tmp_path / f"*.{fmt}"), fmt, partitions=3)  # type: ignore[arg-type]
    p.source(source).key_by("k").agg(agg.sum("v")).sink(MemorySink())
    assert callable(runner)
    with pytest.raises(FileReadError, match=f"cannot read input file {bad}: ") as caught:
        runner(p)
    assert caught.value.path == str(bad) and caught.value.reason
    assert source.find_unreadable() is not None
    assert source.find_unreadable([str(tmp_path / f"part-003.{fmt}")]) is None
