"""The demo scenario's parts: the generator is deterministic, the check catches corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from strom.demo import DemoConfig, DemoResult, devices, generate, run_demo, verify
from strom.demo.check import Outcome, read_table


def test_generator_is_deterministic_by_seed() -> None:
    config = DemoConfig(events=2_000, devices=10, seed=3)
    a, b = generate(config), generate(config)
    assert a.records == b.records
    assert a.events.equals(b.events)
    assert devices(config).equals(devices(DemoConfig(events=1, devices=10, seed=3)))
    other = generate(DemoConfig(events=2_000, devices=10, seed=4))
    assert other.records != a.records
    # chunks concatenate to the whole
    first, rest = generate(config, count=700), generate(config, start=700)
    assert first.records + rest.records == a.records
    kinds = set(a.events.get_column("kind"))
    assert {"normal", "temp_spike", "vibration_spike", "malformed"} <= kinds
    assert a.events.get_column("late").sum() > 0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoResult]:
    workdir = tmp_path_factory.mktemp("demo")
    console = Console(file=open(workdir / "out.txt", "w"), width=200)  # noqa: SIM115
    result = run_demo(DemoConfig(events=3_000, devices=10, seed=11), workdir, console, live=False)
    console.file.close()
    return workdir / "demo.db", result


def test_demo_run_passes_its_check(demo_run: tuple[Path, DemoResult]) -> None:
    _, result = demo_run
    assert result.checked and result.problems == []
    assert result.produced == 3_000
    assert result.outcome.dead_letters == result.malformed


def test_check_catches_a_corrupted_table(demo_run: tuple[Path, DemoResult]) -> None:
    db, result = demo_run
    config = DemoConfig(events=3_000, devices=10, seed=11)
    events, table = generate(config).events, devices(config)
    good = result.outcome
    assert verify(events, table, good) == []
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE device_windows SET count = count + 1 WHERE rowid = (SELECT min(rowid) "
            "FROM device_windows)"
        )
        conn.execute(
            "DELETE FROM device_windows WHERE rowid = (SELECT max(rowid) FROM device_windows)"
        )
    conn.close()
    corrupted = read_table(db, "device_windows")
    assert corrupted is not None
    problems = verify(
        events,
        table,
        Outcome(corrupted, good.late, good.dead_letters, good.alerts),
    )
    assert any("differ in count" in p for p in problems), problems
    assert any("1 missing" in p for p in problems), problems
    # a wrong dead-letter count and a lost alert are caught too
    lost_alert = Outcome(good.windows, good.late, good.dead_letters + 1, good.alerts.slice(1))
    problems = verify(events, table, lost_alert)
    assert any("dead letters" in p for p in problems) and any("alerts" in p for p in problems)
