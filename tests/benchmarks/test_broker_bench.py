"""The broker benchmark runs end to end (at a tiny scale: these numbers mean nothing)."""

from __future__ import annotations

from typing import Any

from benchmarks import broker

REQUIRED = {
    "benchmark",
    "system",
    "params",
    "events",
    "bytes",
    "wall_s",
    "cpu_s",
    "events_per_s",
    "events_per_core_s",
    "p50_ms",
    "p99_ms",
    "correct",
}


def test_quick_suite_at_tiny_scale() -> None:
    lines: list[dict[str, Any]] = []
    broker.run(quick=True, emit=lines.append, scale=0.004)
    results = [x for x in lines if "events" in x]
    strom = [x for x in results if x["system"].startswith("strom")]
    assert {x["benchmark"] for x in strom} == {
        "broker.produce",
        "broker.consume",
        "broker.produce_latency",
    }
    for line in results:
        assert line.keys() >= REQUIRED
    for line in strom:
        assert line["correct"] is True, line
        assert line["events"] > 0
    assert {x["benchmark"] for x in lines if x["benchmark"].startswith("ceiling.")} == {
        "ceiling.loopback_tcp",
        "ceiling.disk_write_fdatasync",
        "ceiling.disk_write_fdatasync_every_1024KiB",
    }
