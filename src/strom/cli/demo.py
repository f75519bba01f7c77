"""``strom demo``: a broker in this process, a sample stream through it, read back and checked.

A stand-in until the stream engine lands: it shows the broker working with a stock Kafka
client (confluent-kafka), like the Kafka quick start's console producer and consumer.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import click
from confluent_kafka import Consumer, KafkaError, Message, Producer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from strom.cli.clients import REQUEST_TIMEOUT_S, ErrorLog, admin_client, client_config, results
from strom.cli.kafka_admin import NewTopic
from strom.cli.output import console

__all__ = ["demo"]

TOPIC = "sample-topic"
PARTITIONS = 3
GROUP = "strom-demo"
#: Distinct keys; five of them hash onto all three partitions (librdkafka's and Java's hashes).
SENSORS = 5
#: How long the demo consumer may take to join its group and get partitions.
JOIN_TIMEOUT_S = 30.0
#: After the producer is done, how long to wait for the last records before calling them lost.
DRAIN_TIMEOUT_S = 15.0


@dataclass
class _Produced:
    """What the producer thread sent, and what the broker acknowledged."""

    sent: Counter[tuple[bytes, bytes]] = field(default_factory=Counter)
    acked: int = 0
    failures: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.acked += 1
        else:
            self.failures.append(error.str())


def sample(seq: int, level: float) -> tuple[bytes, bytes]:
    """One sample record: key ``sensor-N``, value ``{"timestamp": ms, "value": level}``."""
    value = {"timestamp": time.time_ns() // 1_000_000, "value": round(level, 2)}
    return f"sensor-{seq % SENSORS}".encode(), json.dumps(value).encode()


@click.command()
@click.option(
    "--messages",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many sample records to produce.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    help="Seconds between two records.",
)
def demo(messages: int, interval: float) -> None:
    """Run a broker in-process, stream sample JSON through it, and read it back."""
    from strom.broker import Broker  # the broker is only needed here; keep `strom --help` fast

    out = console()
    with Broker() as broker:
        bootstrap = broker.bootstrap_servers
        out.print(f"[bold]strom broker[/] listening on {bootstrap} (in this process)")
        _create_topic(bootstrap)
        out.print(f"created topic [bold]{TOPIC}[/] with {PARTITIONS} partitions")
        consumer = _joined_consumer(bootstrap)
        out.print(
            f"consumer joined group [bold]{GROUP}[/]; producing {messages} records, "
            f"one every {interval:g} s:\n"
        )
        produced = _Produced()
        thread = threading.Thread(
            target=_produce,
            args=(bootstrap, messages, interval, produced),
            name="strom-demo-producer",
            daemon=True,
        )
        thread.start()
        try:
            consumed = _consume(consumer, produced, out)
        finally:
            produced.stop.set()
            consumer.close()
            thread.join()
    _summarise(out, produced, consumed)


def _create_topic(bootstrap: str) -> None:
    admin, _ = admin_client(bootstrap)
    futures = admin.create_topics(
        [NewTopic(TOPIC, num_partitions=PARTITIONS)], request_timeout=REQUEST_TIMEOUT_S
    )
    results(futures, f"cannot create {TOPIC!r}")


def _joined_consumer(bootstrap: str) -> Consumer:
    """A consumer in :data:`GROUP` that already owns its partitions, so output is live."""
    config = client_config(
        bootstrap,
        ErrorLog(),
        **{"group.id": GROUP, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100},
    )
    consumer = Consumer(config)
    assigned = threading.Event()
    consumer.subscribe([TOPIC], on_assign=lambda _c, _p: assigned.set())
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not assigned.is_set():
        if time.monotonic() > deadline:
            consumer.close()
            raise click.ClickException(f"the consumer got no partitions in {JOIN_TIMEOUT_S:.0f} s")
        consumer.poll(0.1)  # the topic is still empty: this only runs the group protocol
    return consumer


def _produce(bootstrap: str, messages: int, interval: float, produced: _Produced) -> None:
    producer = Producer(client_config(bootstrap, ErrorLog(), **{"linger.ms": 0}))
    level = 50.0
    try:
        for seq in range(messages):
            if produced.stop.is_set():
                break
            level += random.uniform(-1, 1)
            key, value = sample(seq, level)
            produced.sent[(key, value)] += 1
            producer.produce(TOPIC, value=value, key=key, on_delivery=produced.on_delivery)
            producer.poll(0)
            produced.stop.wait(interval)
        unsent = producer.flush(REQUEST_TIMEOUT_S)
        if unsent:
            produced.failures.append(f"{unsent} records still unsent at the end")
    finally:
        produced.done.set()


def _consume(consumer: Consumer, produced: _Produced, out: Console) -> Counter[tuple[bytes, bytes]]:
    """Print records as they arrive until all sent ones are back, or the stream goes quiet."""
    consumed: Counter[tuple[bytes, bytes]] = Counter()
    quiet_since: float | None = None
    while True:
        total = sum(produced.sent.values())
        if produced.done.is_set():
            if consumed.total() >= total:
                return consumed
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > DRAIN_TIMEOUT_S:
                return consumed
        message = consumer.poll(0.1)
        if message is None:
            continue
        if message.error() is not None:
            out.print(f"[yellow]consumer: {message.error()}[/]")
            continue
        key, value = message.key() or b"", message.value() or b""
        consumed[(key, value)] += 1
        quiet_since = None
        out.print(
            Text.assemble(
                (f"p{message.partition()} ", "cyan"),
                (f"@{message.offset():<4} ", "dim"),
                (f"{key.decode(errors='replace')}  ", "green"),
                value.decode(errors="replace"),
            )
        )


def _summarise(out: Console, produced: _Produced, consumed: Counter[tuple[bytes, bytes]]) -> None:
    sent = produced.sent.total()
    lost = produced.sent - consumed
    unexpected = consumed - produced.sent
    ok = not lost and not unexpected and not produced.failures
    out.print("\n[bold]summary[/]")
    summary = Table(show_header=False, show_edge=False)
    summary.add_row("produced", str(sent))
    summary.add_row("acknowledged", str(produced.acked))
    summary.add_row("consumed", str(consumed.total()))
    summary.add_row("all matched", "[green]yes[/]" if ok else "[red]no[/]")
    out.print(summary)
    if not ok:
        reasons = [f"{lost.total()} lost"] if lost else []
        reasons += [f"{unexpected.total()} unexpected"] if unexpected else []
        reasons += produced.failures[:3]
        raise click.ClickException(f"the stream did not come back intact: {'; '.join(reasons)}")
