"""Consumer groups end to end: real consumer processes, one killed with SIGKILL, one joining.

Each consumer is a separate process running this file as a script (see :func:`worker`): a
confluent-kafka consumer in one group (eager ``range`` assignment, manual commits) that, for
every message, first appends a ``proc`` line to its own event file (the processing), then
commits that message's offset synchronously, then appends ``done`` (the commit succeeded) or
``commit_failed`` (with the error). Assignments and revocations are logged too.

What is asserted about processing (``_check_processing``), exactly:

1. at least once: every acknowledged produced message has a ``proc`` line somewhere;
2. committed processing happens once: no message has two ``done`` lines, across all consumers;
3. every other processing is explained: a consumer stopped cleanly has no ``proc`` without its
   ``done`` or ``commit_failed``; the killed consumer has at most one ``proc`` without ``done``
   (the message it held when killed, necessarily its last line). So a message is processed
   twice only when an earlier processing was not known to be committed.

A message processed by the killed consumer and committed just before the kill may have no
``done`` line anywhere; that is why (1) counts ``proc`` lines and (2) bounds ``done`` lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from broker_proc import TracebackRecorder, wait_until
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
)
from confluent_kafka.admin import AdminClient, NewTopic

from strom.broker import Broker

TOPIC = "events"
GROUP = "e2e"
PARTITIONS = 6
SESSION_TIMEOUT_MS = 2000
RATE = 150  # records/s: the consumers (a few ms per message) keep up, and are always busy


def worker(bootstrap: str, name: str, events_path: str, delay_ms: int) -> None:
    """A consumer process: process-then-commit each message, logging events as JSON lines."""
    fd = os.open(events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def emit(**event: Any) -> None:
        # One write per line on an O_APPEND descriptor: lines survive a SIGKILL whole.
        os.write(fd, (json.dumps(event) + "\n").encode())

    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 300,
            "max.poll.interval.ms": 30_000,
        }
    )
    consumer.subscribe(
        [TOPIC],
        on_assign=lambda c, ps: emit(e="assign", p=sorted(tp.partition for tp in ps)),
        on_revoke=lambda c, ps: emit(e="revoke", p=sorted(tp.partition for tp in ps)),
    )
    emit(e="started", pid=os.getpid())
    while not stopping:
        msg = consumer.poll(0.05)
        if msg is None:
            continue
        if msg.error() is not None:
            emit(e="error", err=str(msg.error()))
            continue
        p, o = msg.partition(), msg.offset()
        emit(e="proc", p=p, o=o, v=msg.value().decode())
        time.sleep(delay_ms / 1000)  # the "work": widens the window in which a kill lands
        try:
            result = consumer.commit(message=msg, asynchronous=False)
            failed = [str(tp.error) for tp in result or [] if tp.error is not None]
        except KafkaException as exc:
            failed = [str(exc)]
        if failed:
            emit(e="commit_failed", p=p, o=o, err=failed)
        else:
            emit(e="done", p=p, o=o)
    consumer.close()
    emit(e="closed")
    os.close(fd)


@dataclass
class Worker:
    name: str
    events_path: Path
    proc: subprocess.Popen[bytes]
    killed: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    _read: int = 0  # bytes of the event file parsed so far
    _held: set[int] = field(default_factory=set)
    _processed: int = 0

    def refresh(self) -> None:
        """Parse the whole lines appended to the event file since the last call."""
        try:
            with open(self.events_path, "rb") as f:
                f.seek(self._read)
                chunk = f.read()
        except FileNotFoundError:
            return
        whole = chunk[: chunk.rfind(b"\n") + 1]  # a line being written may be incomplete
        self._read += len(whole)
        for line in whole.splitlines():
            ev = json.loads(line)
            self.events.append(ev)
            if ev["e"] == "assign":
                self._held = set(ev["p"])
            elif ev["e"] == "revoke":
                self._held = set()
            elif ev["e"] == "proc":
                self._processed += 1

    def assignment(self) -> set[int]:
        """Partitions held now, according to the consumer's own callbacks."""
        self.refresh()
        return set(self._held)

    def processed(self) -> int:
        self.refresh()
        return self._processed

    def last_event(self) -> str | None:
        self.refresh()
        return self.events[-1]["e"] if self.events else None


@dataclass
class Cluster:
    bootstrap: str
    tmp: Path
    workers: dict[str, Worker] = field(default_factory=dict)

    def spawn(self, name: str, delay_ms: int = 2) -> Worker:
        events = self.tmp / f"{name}.events"
        with open(self.tmp / f"{name}.stderr", "wb") as stderr:  # the child keeps its copy
            proc = subprocess.Popen(
                [sys.executable, __file__, self.bootstrap, name, str(events), str(delay_ms)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.workers[name] = Worker(name, events, proc)
        return self.workers[name]

    def live(self) -> list[Worker]:
        return [w for w in self.workers.values() if not w.killed]

    def kill_all(self) -> None:
        for w in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            with contextlib.suppress(Exception):
                w.proc.wait(timeout=10)


class Load(threading.Thread):
    """Produces ``str(i)`` round-robin over the partitions at ``RATE`` records/s until stopped."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
        self.acked: set[tuple[int, int]] = set()
        self.errors: list[Any] = []
        self.stop = threading.Event()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked.add((msg.partition(), msg.offset()))
        else:
            self.errors.append(err)

    def run(self) -> None:
        i, start = 0, time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * RATE)
            while i < due:
                self.producer.produce(
                    TOPIC,
                    value=str(i).encode(),
                    partition=i % PARTITIONS,
                    on_delivery=self._on_delivery,
                )
                i += 1
            self.producer.poll(0.02)
        self.producer.flush(30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """An in-process broker with the topic; its ``strom`` loggers must record no traceback
    (a consumer killed mid-fetch is a closed connection, not a broker failure)."""
    tracebacks = TracebackRecorder()
    logging.getLogger("strom").addHandler(tracebacks)
    try:
        with Broker(tmp_path / "data") as broker:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
            admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(timeout=30)
            c = Cluster(broker.bootstrap_servers, tmp_path)
            try:
                yield c
            finally:
                c.kill_all()
    finally:
        logging.getLogger("strom").removeHandler(tracebacks)
    found = [logging.Formatter().format(r) for r in tracebacks.records]
    assert not found, "\n\n".join(found)


def _owners_ok(workers: list[Worker]) -> bool:
    """Every partition owned by exactly one of ``workers``, and each of them owns some."""
    held = [w.assignment() for w in workers]
    if any(not h for h in held):
        return False
    return sum(len(h) for h in held) == PARTITIONS and set().union(*held) == set(range(PARTITIONS))


def _broker_view(admin: AdminClient) -> tuple[str, dict[str, set[int]]]:
    """The group's state and each member's (by client id) assignment, as strom reports them."""
    desc = admin.describe_consumer_groups([GROUP])[GROUP].result(timeout=10)
    members = {
        m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members
    }
    return str(desc.state.name), members


def _agrees(admin: AdminClient, workers: list[Worker]) -> bool:
    """strom's DescribeGroups answer shows exactly these members with their own assignments."""
    state, members = _broker_view(admin)
    return state == "STABLE" and members == {w.name: w.assignment() for w in workers}


def _settled(admin: AdminClient, workers: list[Worker]) -> bool:
    return _owners_ok(workers) and _agrees(admin, workers)


def test_group_rebalances_on_kill_and_join(cluster: Cluster) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    load = Load(cluster.bootstrap)
    load.start()
    try:
        # b, the one to be killed, works slowly: a kill then lands mid-message.
        for name, delay_ms in (("a", 2), ("b", 40), ("c", 2)):
            cluster.spawn(name, delay_ms)
        wait_until(
            lambda: _settled(admin, cluster.live()), 60, "3 members sharing 6 partitions", 0.1
        )
        listed = admin.list_consumer_groups().result(timeout=10)
        assert GROUP in {g.group_id for g in listed.valid}, listed.valid

        victim = cluster.workers["b"]
        wait_until(lambda: victim.processed() >= 30, 60, "the victim to process messages")
        wait_until(lambda: victim.last_event() == "proc", 60, "the victim to be mid-message", 0)
        taken = victim.assignment()
        victim.proc.kill()  # SIGKILL, most likely between processing and committing
        victim.proc.wait(timeout=10)
        victim.killed = True

        # Its partitions move to the two others once its session times out.
        deadline = SESSION_TIMEOUT_MS / 1000 + 30
        wait_until(lambda: _settled(admin, cluster.live()), deadline, "b's partitions to move", 0.1)
        survivors = cluster.live()
        assert taken <= set().union(*(w.assignment() for w in survivors))

        # A member joining takes a share.
        before = {w.name: w.processed() for w in survivors}
        wait_until(
            lambda: all(w.processed() > before[w.name] for w in survivors),
            60,
            "the survivors to make progress",
        )
        newcomer = cluster.spawn("d")
        wait_until(lambda: _settled(admin, cluster.live()), 60, "d to get partitions", 0.1)
        wait_until(lambda: newcomer.processed() > 0, 60, "d to process messages")
    finally:
        load.stop.set()
        load.join(timeout=60)
    assert not load.errors, load.errors[:5]
    assert load.acked

    # Everything produced gets processed and committed.
    ends = {p: 1 + max(o for q, o in load.acked if q == p) for p in range(PARTITIONS)}

    def all_committed() -> bool:
        req = ConsumerGroupTopicPartitions(GROUP)
        res = admin.list_consumer_group_offsets([req])[GROUP].result(timeout=10)
        return {tp.partition: tp.offset for tp in res.topic_partitions} == ends

    wait_until(all_committed, 60, "the group to commit every message", 0.1)
    for w in cluster.live():
        w.proc.send_signal(signal.SIGTERM)
    for w in cluster.live():
        code = w.proc.wait(timeout=30)
        assert code == 0, (w.name, code, (cluster.tmp / f"{w.name}.stderr").read_text())
    _check_processing(cluster, load.acked)

    # The group is empty now, and strom still lists and describes it.
    state, members = _broker_view(admin)
    assert (state, members) == ("EMPTY", {})


def _check_processing(cluster: Cluster, acked: set[tuple[int, int]]) -> None:
    """The guarantees listed in the module docstring."""
    procs: Counter[tuple[int, int]] = Counter()
    dones: Counter[tuple[int, int]] = Counter()
    failures: list[dict[str, Any]] = []
    redelivered: list[tuple[int, int]] = []  # held uncommitted by the killed consumer
    for w in cluster.workers.values():
        w.refresh()
        events = w.events
        open_procs: dict[tuple[int, int], int] = {}
        for i, ev in enumerate(events):
            key = (ev.get("p", -1), ev.get("o", -1))
            if ev["e"] == "proc":
                procs[key] += 1
                open_procs[key] = i
            elif ev["e"] == "done":
                dones[key] += 1
                del open_procs[key]
            elif ev["e"] == "commit_failed":
                failures.append(ev)
                del open_procs[key]
            elif ev["e"] == "error":
                raise AssertionError(f"{w.name}: consumer error {ev}")
        if w.killed:
            assert len(open_procs) <= 1, f"{w.name}: uncommitted {sorted(open_procs)}"
            if open_procs:
                [(held, at)] = open_procs.items()
                last_proc = max(i for i, ev in enumerate(events) if ev["e"] == "proc")
                assert at == last_proc, "only the message held at the kill may be uncommitted"
                redelivered.append(held)
        else:
            assert not open_procs, f"{w.name} stopped without committing {sorted(open_procs)}"
            assert events[-1]["e"] == "closed", events[-3:]
    missing = sorted(acked - procs.keys())
    assert not missing, f"{len(missing)} messages never processed, e.g. {missing[:5]}"
    unknown = sorted(procs.keys() - acked)
    assert not unknown, f"processed messages nobody produced: {unknown[:5]}"
    twice = sorted(k for k, n in dones.items() if n > 1)
    assert not twice, f"messages processed and committed twice: {twice[:5]}"
    # Unless the killed consumer's commit landed just before the kill, the new owner of its
    # partition resumes from the committed offset and so processes that message again.
    for held in redelivered:
        print(f"message {held} held by the killed consumer: {procs[held]} processing(s)")
    reprocessed = sum(n - 1 for n in procs.values())
    print(
        f"{len(acked)} messages, {sum(procs.values())} processings "
        f"({reprocessed} repeated after an uncommitted one), {len(failures)} refused commits"
    )


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
