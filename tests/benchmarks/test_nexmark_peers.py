"""Each Nexmark peer that can be installed here runs q1 over a tiny dataset and gets it right.

The peer tests are slow: the first run creates each peer's virtualenv from PyPI (minutes); a
peer whose venv cannot be created (offline) is skipped with its reason.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from benchmarks.nexmark.load import TOPICS
from benchmarks.nexmark.peers import Peer, available_peers, per_core_ratio
from benchmarks.nexmark.peers._child import run_child
from benchmarks.systems import RunningBroker, start_strom
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

SLOW = [pytest.mark.slow, pytest.mark.timeout(3600)]

START_MS = 1_700_000_000_000


def _events() -> dict[str, list[dict[str, Any]]]:
    persons = [
        {
            "id": 1000 + i,
            "name": f"Person {i}",
            "emailAddress": f"p{i}@example.com",
            "creditCard": "1234 5678 9012 3456",
            "city": "Boise",
            "state": ("OR", "ID", "CA", "WA")[i % 4],
            "dateTime": START_MS + 1000 * i,
            "extra": "",
        }
        for i in range(5)
    ]
    auctions = [
        {
            "id": 1000 + i,
            "itemName": f"item {i}",
            "description": "",
            "initialBid": 100,
            "reserve": 200,
            "dateTime": START_MS + 500 * i,
            "expires": START_MS + 500 * i + 20_000,
            "seller": 1000 + i % 5,
            "category": 10 + i % 3,
            "extra": "",
        }
        for i in range(10)
    ]
    bids = [
        {
            "auction": 1000 + (i * 7) % 10,
            "bidder": 1000 + i % 5,
            "price": 100 + (i * 7919) % 10_000,
            "channel": "Google",
            "url": "https://www.nexmark.com/item.htm",
            "dateTime": START_MS + 100 * i,
            "extra": "x" * (i % 7),
        }
        for i in range(300)
    ]
    return {"person": persons, "auction": auctions, "bid": bids}


@pytest.fixture(scope="module")
def events() -> dict[str, list[dict[str, Any]]]:
    return _events()


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory: pytest.TempPathFactory, events: dict[str, Any]) -> Path:
    directory = tmp_path_factory.mktemp("nexmark-events")
    for kind, rows in events.items():
        frame = pl.DataFrame(rows)
        frame.write_parquet(directory / f"{kind}.parquet")
        frame.write_ndjson(directory / f"{kind}.ndjson")
    return directory


@pytest.fixture(scope="module")
def broker(events: dict[str, list[dict[str, Any]]]) -> Iterator[RunningBroker]:
    with start_strom("never") as running:
        admin = AdminClient({"bootstrap.servers": running.bootstrap})
        created = admin.create_topics([NewTopic(t, 2, 1) for t in TOPICS.values()])
        for future in created.values():
            future.result(30)
        producer = Producer({"bootstrap.servers": running.bootstrap})
        for kind, rows in events.items():
            for i, row in enumerate(rows):
                producer.produce(TOPICS[kind], json.dumps(row).encode(), partition=i % 2)
        assert producer.flush(30) == 0
        yield running


@pytest.mark.parametrize(
    "peer", [pytest.param(p, marks=SLOW) for p in available_peers()], ids=lambda p: p.name
)
def test_q1(peer: Peer, broker: RunningBroker, events_dir: Path, events: dict[str, Any]) -> None:
    if peer.version() is None:
        pytest.skip(f"{peer.name}: {peer.unavailable_reason()}")
    run = peer.run("q1", broker.bootstrap, events_dir, timeout_s=600)
    assert run.na_reason is None, run.na_reason
    assert run.system == f"{peer.name} {peer.version()}"
    assert run.events == len(events["bid"])
    assert run.cpu_s > 0 and run.wall_s > 0
    assert run.output is not None
    expected = pl.DataFrame(events["bid"]).select(
        "auction", "bidder", (pl.col("price") * 0.908).alias("price"), "dateTime", "extra"
    )
    order = ["dateTime", "auction", "bidder", "price"]
    assert run.output.sort(order).equals(expected.sort(order))
    ratio = per_core_ratio(1000, 1.0, run)
    assert ratio is not None and ratio > 0


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_unknown_query_is_not_a_number(broker: RunningBroker, events_dir: Path) -> None:
    peer = available_peers()[1]  # Bytewax: the quickest to install
    if peer.version() is None:
        pytest.skip(f"{peer.name}: {peer.unavailable_reason()}")
    run = peer.run("q6", broker.bootstrap, events_dir, timeout_s=60)
    assert run.output is None
    assert run.na_reason == "unknown query 'q6'"


def test_a_child_that_hangs_is_killed_at_its_timeout(tmp_path: Path) -> None:
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    started = time.perf_counter()
    result = run_child([sys.executable, "-c", script], tmp_path, timeout_s=1.0)
    assert result.returncode is None
    assert time.perf_counter() - started < 10
