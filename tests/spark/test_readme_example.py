"""The README's Spark example runs as written (on the shared session) and writes what the
bounded runner computes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from strom import MemorySink, Pipeline, run_bounded
from strom.pipeline.plan import SinkNode
from strom.pipeline.validate import validate

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_spark_example(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "run_spark" in b]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "events").mkdir()
    for i in range(3):
        pl.DataFrame(
            {
                "ts": [j * 900 + i * 7 for j in range(40)],
                "device": [f"d{j % 3}" for j in range(40)],
                "temp": [float(j % 11) * (1 if j % 4 else -9) for j in range(40)],
            }
        ).write_parquet(tmp_path / "events" / f"e{i}.parquet")
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    got = pl.read_parquet(tmp_path / "out" / "*.parquet")
    # the same plan on the bounded runner, into memory
    p: Pipeline = namespace["p"]
    plan = p.plan()
    sink = MemorySink()
    run_bounded(validate((SinkNode(plan.sinks[0].input, sink),)))
    order = ["window_start", "device"]
    assert_frame_equal(
        got.sort(order), sink.to_frame().sort(order), check_exact=False, rel_tol=1e-9
    )
