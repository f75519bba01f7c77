"""``kill -9`` of a real ``strom broker`` in each phase of a transaction, then a restart.

Phases: after AddPartitionsToTxn and produce (nothing decided), after the decision is in the
transaction log but before any marker (``txn-prepared``), after the first of two markers
(``txn-first-marker``), after every marker but before the Complete state is logged
(``txn-markers-written``), after the Complete state is logged (``txn-completed``), and with
nothing in flight once the transaction is complete. The targeted kills use the broker's named
crash points (``STROM_BROKER_CRASH_AT``: the broker SIGKILLs itself at exactly that step).

After each restart: the outcome is the one decided before the crash (read_committed shows the
committed records, never the aborted ones; read_uncommitted shows both), every partition's last
stable offset equals its high watermark, and no transaction is left open.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_proc import BrokerProcess, RawClient, free_port, wait_until
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from txn_clients import Confluent, ConfluentProducer

from strom.broker.coordinator.crashpoints import ENV

TOPIC = "txn-crash"
PARTITIONS = 2
OPEN_STATES = {"Ongoing", "PrepareCommit", "PrepareAbort"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "data", free_port(), tmp_path / "broker.log", flush="always")
    try:
        proc.start()
        admin = AdminClient({"bootstrap.servers": proc.bootstrap_servers})
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(15)
        yield proc
    finally:
        proc.close()


def _offsets(client: RawClient, isolation: int) -> list[int]:
    body = client.request(
        "ListOffsets",
        4,
        {
            "replica_id": -1,
            "isolation_level": isolation,
            "topics": [
                {
                    "name": TOPIC,
                    "partitions": [
                        {"partition_index": p, "current_leader_epoch": -1, "timestamp": -1}
                        for p in range(PARTITIONS)
                    ],
                }
            ],
        },
        api_key=2,
    )
    return [p["offset"] for p in body["topics"][0]["partitions"]]


def _transactions(client: RawClient) -> dict[str, str]:
    body = client.request(
        "ListTransactions", 0, {"state_filters": [], "producer_id_filters": []}, api_key=66
    )
    return {t["transactional_id"]: t["transaction_state"] for t in body["transaction_states"]}


def _check_settled(broker: BrokerProcess, committed: list[bytes], aborted: list[bytes]) -> None:
    """The outcome as decided, LSO = high watermark, no transaction open."""
    with RawClient(broker.address) as client:
        wait_until(
            lambda: not OPEN_STATES & set(_transactions(client).values()),
            20,
            "no transaction left open",
        )
        assert _offsets(client, 1) == _offsets(client, 0)  # LSO = high watermark
    reader = Confluent()
    got = reader.read(broker.bootstrap_servers, TOPIC, "read_committed", len(committed))
    assert sorted(got) == sorted(committed)
    everything = reader.read(
        broker.bootstrap_servers, TOPIC, "read_uncommitted", len(committed) + len(aborted)
    )
    assert sorted(everything) == sorted(committed + aborted)


def _open_transaction(
    broker: BrokerProcess, tid: str, tag: str
) -> tuple[ConfluentProducer, list[bytes]]:
    """A producer with a flushed open transaction over both partitions."""
    p = ConfluentProducer(broker.bootstrap_servers, tid, 10_000)
    p.init()
    p.begin()
    values = [f"{tag}-{i}".encode() for i in range(6)]
    for i, v in enumerate(values):
        p.send(TOPIC, v, partition=i % PARTITIONS)
    p.flush()
    return p, values


@pytest.mark.parametrize(
    ("point", "commit"),
    [
        ("txn-prepared", True),
        ("txn-prepared", False),
        ("txn-first-marker", True),
        ("txn-first-marker", False),
        ("txn-markers-written", True),
        ("txn-completed", True),
    ],
)
def test_kill_mid_decision_completes_as_decided(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch, point: str, commit: bool
) -> None:
    # The committed baseline, then the transaction the crash lands in.
    p, base = _open_transaction(broker, "base", "base")
    p.commit()
    p.close()
    broker.stop()
    monkeypatch.setenv(ENV, point)
    broker.start()
    monkeypatch.delenv(ENV)
    p, values = _open_transaction(broker, "victim", "victim")
    with pytest.raises(KafkaException):  # the broker dies during EndTxn
        p.commit(timeout=3) if commit else p.abort(timeout=3)
    p.close()
    wait_until(lambda: not broker.alive(), 10, "the broker to kill itself at the crash point")
    broker.start()
    committed = base + values if commit else base
    _check_settled(broker, committed, [] if commit else values)
    with RawClient(broker.address) as client:
        assert _transactions(client)["victim"] == ("CompleteCommit" if commit else "CompleteAbort")


def test_kill_with_a_transaction_open_then_a_new_instance_aborts_it(
    broker: BrokerProcess,
) -> None:
    p, values = _open_transaction(broker, "open", "open")
    broker.kill()
    p.close()
    broker.start()
    with RawClient(broker.address) as client:
        assert _transactions(client)["open"] == "Ongoing"  # undecided: still the producer's
    successor = Confluent().producer(broker.bootstrap_servers, "open")
    successor.init()  # fences the old instance and aborts its transaction
    successor.close()
    _check_settled(broker, [], values)


def test_kill_with_a_transaction_open_then_the_timeout_aborts_it(broker: BrokerProcess) -> None:
    p = Confluent().producer(broker.bootstrap_servers, "forgotten", timeout_ms=2000)
    p.init()
    p.begin()
    p.send(TOPIC, b"forgotten", partition=1)
    p.flush()
    broker.kill()
    p.close()
    broker.start()
    _check_settled(broker, [], [b"forgotten"])
    with RawClient(broker.address) as client:
        assert _transactions(client)["forgotten"] == "CompleteAbort"


def test_kill_after_complete(broker: BrokerProcess) -> None:
    p, values = _open_transaction(broker, "done", "done")
    p.commit()
    p.close()
    broker.kill()
    broker.start()
    _check_settled(broker, values, [])
    # The producer id and epoch survived: a new instance gets the next epoch.
    with RawClient(broker.address) as client:
        before = client.request(
            "DescribeTransactions", 0, {"transactional_ids": ["done"]}, api_key=65
        )["transaction_states"][0]
        bumped = client.request(
            "InitProducerId",
            4,
            {"transactional_id": "done", "transaction_timeout_ms": 10_000},
            api_key=22,
        )
    assert (bumped["producer_id"], bumped["producer_epoch"]) == (
        before["producer_id"],
        before["producer_epoch"] + 1,
    )


@pytest.mark.slow
def test_random_kills_across_many_transactions(broker: BrokerProcess) -> None:
    """External ``kill -9`` at random moments of a stream of transactions, 20 rounds: every
    transaction whose EndTxn was acknowledged has its outcome, the others are aborted."""
    rng = random.Random(20_261_206)
    committed: list[bytes] = []
    aborted: list[bytes] = []
    for round_ in range(20):
        p = Confluent().producer(broker.bootstrap_servers, "stream", timeout_ms=3000)
        p.init()
        for txn in range(rng.randrange(1, 6)):
            p.begin()
            values = [f"r{round_}-t{txn}-{i}".encode() for i in range(rng.randrange(1, 8))]
            for i, v in enumerate(values):
                p.send(TOPIC, v, partition=i % PARTITIONS)
            p.flush()
            if rng.random() < 0.7:
                p.commit()
                committed += values
            else:
                p.abort()
                aborted += values
        # The last transaction is left open and the broker killed under it.
        p.begin()
        values = [f"r{round_}-open-{i}".encode() for i in range(3)]
        for i, v in enumerate(values):
            p.send(TOPIC, v, partition=i % PARTITIONS)
        p.flush()
        aborted += values
        broker.kill()
        p.close()
        broker.start()
    _check_settled(broker, committed, aborted)
