"""Crash safety: ``kill -9`` the broker under acks=all idempotent produce, restart, verify.

Each trial runs against a real ``strom broker --flush always`` subprocess: a fresh
confluent-kafka producer (``enable.idempotence``, ``acks=all``) writes uniquely tagged values to
several partitions; at a random moment the broker is killed with SIGKILL; the producer is then
purged and closed (so nothing from the dead trial is retried later), the broker is restarted on
the same directory and port, and the whole log is checked:

* every record whose delivery callback reported success is present exactly once, at the
  partition and offset the broker acknowledged;
* no value appears twice anywhere, and offsets in every partition are contiguous from 0;
* a fresh consumer with ``check.crcs=True`` reads everything without error, and the segment
  files themselves hold only whole batches with valid CRC-32Cs and contiguous offsets;
* the restarted broker accepts produce again (each trial waits for its first acknowledgement
  before arming the kill, and a final probe produces after the last restart).

One data directory is reused across trials, so recovery runs on a growing, multi-segment log.
The random kill moments come from a seed printed at the start (set ``STROM_CRASH_SEED`` to
replay one run). ``--run-slow`` runs 200 trials instead of 20.

A second test keeps one producer alive across restarts, so its retries of batches the killed
broker wrote but never acknowledged reach the new process; two in-process tests pin the
idempotent-producer state that makes those retries duplicates (rebuilt from the log on start,
across a segment roll) and its end (a deleted topic forgets it).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_proc import BrokerProcess, RawClient, free_port, produce, read_log, wait_until
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from strom.broker import Broker
from strom.broker.log import FlushPolicy, LogConfig
from strom.kafka.protocol.records import (
    Record,
    batch_crc_ok,
    build_batch,
    complete_length,
    iter_batches,
)

TOPIC = "crash"
PARTITIONS = 4
SEGMENT_BYTES = 256 * 1024  # small segments: trials cross segment boundaries
DEFAULT_TRIALS = 20
SLOW_TRIALS = 200
RATE = 2000  # records/s offered by each producer


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "trials" in metafunc.fixturenames:
        trials = SLOW_TRIALS if metafunc.config.getoption("--run-slow") else DEFAULT_TRIALS
        # A trial takes 1-3 s (more as the log grows); the suite-wide timeout fits 20, not 200.
        budget = pytest.mark.timeout(120 + 15 * trials)
        metafunc.parametrize("trials", [pytest.param(trials, marks=budget)])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path / "data",
        free_port(),
        tmp_path / "broker.log",
        flush="always",
        extra_args=("--segment-bytes", str(SEGMENT_BYTES)),
    )
    try:
        yield proc.start()
    finally:
        proc.close()


Acked = dict[bytes, tuple[int, int]]  # value -> (partition, offset) the broker acknowledged


def _create_topic(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)], operation_timeout=10)
    futures[TOPIC].result(timeout=30)


class _Load:
    """An idempotent acks=all producer writing uniquely tagged values round-robin over the
    partitions at about ``RATE`` records/s. Only error-free delivery reports count as acked."""

    def __init__(self, bootstrap: str, rng: random.Random, tag: str) -> None:
        self.tag = tag
        self.size = rng.choice([40, 200, 1000, 4000])
        self.acked: Acked = {}
        self.errors: list[KafkaError] = []
        self.sent = 0
        self._t0: float | None = None
        self._closed = False
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": rng.choice([0, 1, 5]),
                "queue.buffering.max.messages": 2000,
                "reconnect.backoff.ms": 20,
                "reconnect.backoff.max.ms": 200,
                # Bounds how long anything left behind could be retried; a restart takes ~1 s.
                "message.timeout.ms": 60_000,
            }
        )

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            self.errors.append(err)

    def tick(self) -> None:
        """Produce what is due at ``RATE`` (at least one record), then serve callbacks.

        The pacing keeps the log small enough to be re-read in full after each of hundreds of
        trials."""
        if self._t0 is None:
            self._t0 = time.monotonic()
        due = int((time.monotonic() - self._t0) * RATE) - self.sent
        for _ in range(min(max(due, 1), 200)):
            value = f"{self.tag}:{self.sent}:".encode().ljust(self.size, b".")
            try:
                self.producer.produce(
                    TOPIC,
                    value=value,
                    partition=self.sent % PARTITIONS,
                    on_delivery=self._on_delivery,
                )
            except BufferError:
                break
            self.sent += 1
        self.producer.poll(0.002)

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()

    def wait_for_new_ack(self, what: str) -> None:
        """Keep producing until one more record is acknowledged: the broker takes produce."""
        before = len(self.acked)

        def progressed() -> bool:
            self.tick()
            return len(self.acked) > before

        wait_until(progressed, 60, what, interval=0)

    def abandon(self) -> None:
        """Purge everything unacknowledged and close: nothing is retried after this."""
        if self._closed:
            return
        self._closed = True
        # A message moving between librdkafka's queues (a retry after the disconnect) can miss
        # one purge: purge until nothing is left. close() would otherwise wait for it to time out.
        deadline = time.monotonic() + 30
        while len(self.producer) and time.monotonic() < deadline:
            self.producer.purge(in_queue=True, in_flight=True, blocking=True)
            self.producer.flush(0.5)
        remaining = len(self.producer)
        self.producer.close()
        assert remaining == 0, f"{remaining} messages still queued after 30 s of purging"

    def finish(self) -> None:
        """Wait until everything sent is delivered (or failed), then close."""
        remaining = self.producer.flush(60)
        assert remaining == 0, f"{remaining} messages undelivered after 60 s"
        self.abandon()


def _consume_all(bootstrap: str, trial: int) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of every partition, read with CRC checks by a fresh consumer."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{trial}",
            "enable.auto.commit": False,
            "check.crcs": True,
            "enable.partition.eof": True,
            "fetch.max.bytes": 8 << 20,
        }
    )
    out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
    try:
        ends = {}
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
            assert low == 0, f"partition {p} starts at {low}"
            ends[p] = high
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 120
        while pending:
            assert time.monotonic() < deadline, f"reading the log timed out; missing {pending}"
            for msg in consumer.consume(10_000, timeout=0.05):
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, f"consume error: {err}"
                    if msg.offset() >= ends[msg.partition()]:
                        pending.discard(msg.partition())
                    continue
                p = msg.partition()
                out[p].append((msg.offset(), msg.value()))
                if msg.offset() + 1 >= ends[p]:
                    pending.discard(p)
    finally:
        consumer.close()
    return out


def _check_segment_files(data_dir: Path, partition: int, end_offset: int) -> None:
    """The partition's segment files: whole batches, valid CRCs, offsets contiguous from 0."""
    files = sorted((data_dir / "logs" / f"{TOPIC}-{partition}").glob("*.log"))
    expected = 0
    for path in files:
        data = path.read_bytes()
        assert complete_length(data) == len(data), f"{path}: partial batch at the end"
        assert int(path.stem) == expected, f"{path}: segment starts at {path.stem}, not {expected}"
        for header, pos in iter_batches(data):
            assert batch_crc_ok(data, header, pos), f"{path}: bad CRC at position {pos}"
            assert header.base_offset == expected, (path, pos, header.base_offset, expected)
            expected = header.next_offset
    assert expected == end_offset, f"{TOPIC}-{partition}: files end at {expected}, not {end_offset}"


def _verify(broker: BrokerProcess, trial: int, acked: Acked) -> int:
    """Check the whole log against everything acknowledged so far; return its record count."""
    log = _consume_all(broker.bootstrap_servers, trial)
    where: dict[bytes, tuple[int, int]] = {}
    for p, records in log.items():
        offsets = [o for o, _ in records]
        assert offsets == list(range(len(records))), f"partition {p}: offsets not contiguous"
        for offset, value in records:
            assert value not in where, f"{value[:24]!r} at {where[value]} and {(p, offset)}"
            where[value] = (p, offset)
        _check_segment_files(broker.data_dir, p, len(records))
    missing = [v[:24] for v in acked if v not in where]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"
    moved = [(v[:24], at, where[v]) for v, at in acked.items() if where[v] != at]
    assert not moved, f"acknowledged records at other offsets: {moved[:3]}"
    return len(where)


def broker_address(broker: Broker) -> tuple[str, int]:
    return broker.host, broker.port


def _merge(acked: Acked, load: _Load) -> None:
    clash = load.acked.keys() & acked.keys()
    assert not clash, f"values acknowledged by two producers: {sorted(clash)[:5]}"
    acked.update(load.acked)


def test_kill_9_under_idempotent_produce(broker: BrokerProcess, trials: int) -> None:
    seed = int(os.environ.get("STROM_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash test seed: {seed} (replay with STROM_CRASH_SEED={seed})")
    rng = random.Random(seed)
    _create_topic(broker.bootstrap_servers)
    acked: Acked = {}
    load = _Load(broker.bootstrap_servers, rng, "t0")
    try:
        for trial in range(trials):
            try:
                # The (re)started broker takes produce; then sustained load, and the kill.
                load.wait_for_new_ack("a first acknowledged record")
                load.run_for(rng.uniform(0.3, 1.0))
                broker.kill()
                load.abandon()  # no retry of this trial's records can reach the new broker
                _merge(acked, load)
                sent, ok, failed = load.sent, len(load.acked), len(load.errors)
                broker.start()
                # The next producer connects while this trial's log is checked.
                load = _Load(broker.bootstrap_servers, rng, f"t{trial + 1}")
                total = _verify(broker, trial, acked)
            except AssertionError as exc:
                raise AssertionError(
                    f"seed {seed}, trial {trial}: {exc}\n{broker.log_tail()}"
                ) from exc
            print(f"trial {trial}: sent {sent}, acked {ok}, failed {failed}; log holds {total}")

        # After the last restart the broker still takes records, and serves them.
        load.wait_for_new_ack("a record acknowledged after the last restart")
        load.finish()
        assert not load.errors, load.errors[:5]
        _merge(acked, load)
        _verify(broker, trials, acked)
    finally:
        load.abandon()
    assert "Traceback" not in broker.log_text(), broker.log_tail(200)


def test_idempotent_producer_outlives_restarts(broker: BrokerProcess, trials: int) -> None:
    """One producer across several restarts (mostly ``kill -9``, sometimes SIGTERM under load):
    its retries of batches the old process wrote but never acknowledged are answered as
    duplicates, so after a final flush every record it sent is in the log exactly once, at the
    offset it was acknowledged with."""
    seed = int(os.environ.get("STROM_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash test seed: {seed} (replay with STROM_CRASH_SEED={seed})")
    rng = random.Random(seed)
    _create_topic(broker.bootstrap_servers)
    load = _Load(broker.bootstrap_servers, rng, "survivor")
    try:
        for cycle in range(max(trials // 4, 5)):
            load.wait_for_new_ack(f"cycle {cycle}: progress after the restart")
            load.run_for(rng.uniform(0.2, 0.6))
            if rng.random() < 0.25:
                assert broker.stop() == 0, broker.log_tail()
            else:
                broker.kill()
            broker.start()
        load.finish()
        try:
            assert not load.errors, f"delivery errors: {load.errors[:5]}"
            assert len(load.acked) == load.sent
            total = _verify(broker, 0, load.acked)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}\n{broker.log_tail()}") from exc
        assert total == load.sent, f"{total - load.sent} records appended twice"
    finally:
        load.abandon()
    assert "Traceback" not in broker.log_text(), broker.log_tail(200)


def test_retries_after_a_restart_are_duplicates(tmp_path: Path) -> None:
    """The deterministic core of the test above, in process: batches an idempotent producer
    wrote before a restart, sent again after it with the same producer id, epoch and sequences,
    are answered with their original offsets and not appended again, also when a segment roll
    lies between them. A new sequence after them is appended."""
    config = {"log": LogConfig(segment_bytes=4096, flush=FlushPolicy.parse("always"))}

    def idempotent(seq: int) -> bytes:
        value = b"%d:" % seq + b"v" * 1500  # two batches per 4 KiB segment
        return build_batch(
            [Record(value=value)], producer_id=7, producer_epoch=0, base_sequence=seq
        )

    with Broker(tmp_path / "data", **config) as broker, RawClient(broker_address(broker)) as c:
        for seq in range(6):
            assert produce(c, "retry", 0, idempotent(seq))["base_offset"] == seq
    segments = sorted((tmp_path / "data" / "logs" / "retry-0").glob("*.log"))
    assert [int(p.stem) for p in segments] == [0, 2, 4]

    with Broker(tmp_path / "data", **config) as broker, RawClient(broker_address(broker)) as c:
        for seq in (2, 3, 4, 5):  # the last segment and the one before it
            answer = produce(c, "retry", 0, idempotent(seq))
            assert (answer["error_code"], answer["base_offset"]) == (0, seq), answer
        assert produce(c, "retry", 0, idempotent(6))["base_offset"] == 6
        records = read_log(broker_address(broker), "retry", 0)
    assert [r.value[:2] for r in records if r.value] == [b"%d:" % i for i in range(7)]


def test_deleting_a_topic_forgets_its_producer_state(tmp_path: Path) -> None:
    """A re-created topic starts with no producer state (Kafka keeps it with the partition):
    sequence 0 again is a new batch, not a duplicate acknowledged without being written."""

    def idempotent(seq: int, value: bytes) -> bytes:
        return build_batch(
            [Record(value=value)], producer_id=7, producer_epoch=0, base_sequence=seq
        )

    with Broker(tmp_path / "data") as broker, RawClient(broker_address(broker)) as c:
        for seq in range(3):
            assert produce(c, "gone", 0, idempotent(seq, b"old"))["base_offset"] == seq
        body = {"topics": [{"name": "gone", "topic_id": b"\x00" * 16}], "timeout_ms": 1000}
        assert c.request("DeleteTopics", 6, body, api_key=20)["responses"][0]["error_code"] == 0
        assert produce(c, "gone", 0, idempotent(0, b"new"))["base_offset"] == 0
        assert [r.value for r in read_log(broker_address(broker), "gone", 0)] == [b"new"]
