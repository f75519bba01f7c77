"""The TPC-H batch benchmark: every query of strom (bounded runner) and hand-written Polars gives
DuckDB's answer on a tiny scale factor, and the answer check itself refuses wrong answers (a
smoke test: its timings mean nothing and none is asserted)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from benchmarks.tpch import report, runner
from benchmarks.tpch.queries import QUERIES

pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("tpch")
    out: list[dict[str, Any]] = []
    systems = ("strom bounded", "polars", "duckdb")
    runner.run(True, out.append, scale=0.01, systems=systems, files=7, root=root)
    return out


def test_every_query_matches_duckdb(lines: list[dict[str, Any]]) -> None:
    seen = {(x["query"], x["system"]) for x in lines}
    assert seen == {(q, s) for q in QUERIES for s in ("strom bounded", "polars", "duckdb")}
    for x in lines:
        assert x["correct"] is True, x
        assert x["wall_s"] > 0 and x["peak_mib"] > 0 and x["cpu_s"] >= 0


def test_report_compares_strom_with_the_fastest_peer(
    lines: list[dict[str, Any]], tmp_path: Path
) -> None:
    paths = report.write(lines, quick=True, directory=tmp_path)
    text = paths[0].read_text(encoding="utf-8")
    assert "TPC-H scale factor 0.01" in text
    summary = report.summary(lines)
    assert [s["query"] for s in summary] == list(QUERIES)
    for s in summary:
        assert s["strom"] == "strom bounded" and s["fastest"] in ("polars", "duckdb")
        assert s["pyspark_over_strom"] is None  # PySpark did not run


def test_unsupported_and_failed_runs_are_reported_not_dropped(tmp_path: Path) -> None:
    rows = [
        {"benchmark": "batch.tpch", "params": {"scale": 1.0}, "query": "q1",
         "system": "strom local", "unsupported": "Sort: not supported; run without"},
        {"benchmark": "batch.tpch", "params": {"scale": 1.0}, "query": "q1",
         "system": "pyspark", "failed": "exit 1"},
    ]  # fmt: skip
    text = report.markdown(rows)
    assert "| q1 | strom local | Sort: not supported |" in text
    assert "| q1 | pyspark | exit 1 |" in text
    assert report.summary(rows) == []


def test_the_answer_check_refuses_wrong_answers() -> None:
    money = pl.Series([Decimal("10.25"), Decimal("7.10")], dtype=pl.Decimal(38, 2))
    ref = pl.DataFrame({"k": ["a", "b"], "m": money, "avg": [0.12345678, 1.5]})
    assert runner.same_answer(ref.with_columns(pl.lit(True).alias("is_update")), ref)
    # a decimal off by one cent, a float off in the 6th digit, a row missing, rows swapped
    cent = pl.Series([Decimal("10.25"), Decimal("7.11")], dtype=pl.Decimal(38, 2))
    assert not runner.same_answer(ref.with_columns(m=cent), ref)
    assert not runner.same_answer(ref.with_columns(avg=pl.Series([0.1234578, 1.5])), ref)
    assert not runner.same_answer(ref.head(1), ref)
    assert not runner.same_answer(ref.reverse(), ref)
    assert not runner.same_answer(ref.drop("avg"), ref)
    # Spark's decimal average (scale 6) against DuckDB's double: to half a unit of scale 6
    spark_avg = pl.Series([Decimal("0.123457"), Decimal("1.500000")], dtype=pl.Decimal(38, 6))
    assert runner.same_answer(ref.with_columns(avg=spark_avg), ref)
    off = pl.Series([Decimal("0.123458"), Decimal("1.500000")], dtype=pl.Decimal(38, 6))
    assert not runner.same_answer(ref.with_columns(avg=off), ref)
