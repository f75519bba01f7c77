"""``strom transactions``: list and describe show transactional ids and open transactions."""

from __future__ import annotations

import json

from cli_helpers import Run, row
from confluent_kafka import Producer

from strom.broker import Broker


def test_list_and_describe(strom: Run, strom_broker: Broker, topic: str) -> None:
    p = Producer(
        {"bootstrap.servers": strom_broker.bootstrap_servers, "transactional.id": "cli-tx"}
    )
    p.init_transactions(15)
    p.begin_transaction()
    p.produce(topic, b"open")
    assert p.flush(15) == 0

    listed = strom("transactions", "list").output
    assert row(listed, "cli-tx")[2] == "Ongoing"
    assert strom("transactions", "list", "--state", "Empty").output.count("cli-tx") == 0

    described = strom("transactions", "describe", "cli-tx").output
    assert row(described, "State")[1] == "Ongoing"
    assert row(described, "Partitions")[1] == f"{topic}[0]"
    assert "s ago" in row(described, "Started")[1]

    p.commit_transaction(15)
    info = json.loads(strom("transactions", "describe", "cli-tx", "--output", "json").output)
    assert info["state"] == "CompleteCommit" and info["partitions"] == []
    assert info["producer_epoch"] == 0 and info["transaction_start_time_ms"] == -1
    [line] = strom("transactions", "list", "--output", "json").output.splitlines()
    assert json.loads(line)["state"] == "CompleteCommit"


def test_describe_unknown(strom: Run) -> None:
    result = strom("transactions", "describe", "nobody", ok=False)
    assert result.exit_code == 1
    assert "transactional id 'nobody' does not exist" in result.output
