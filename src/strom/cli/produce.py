"""``strom produce TOPIC``: one message per line of stdin (like ``kafka-console-producer``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import click
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from strom.cli.clients import (
    CONNECT_TIMEOUT_S,
    ErrorLog,
    client_config,
    connect,
    error_text,
    parse_pairs,
)
from strom.cli.kafka_admin import TopicMetadata
from strom.cli.options import bootstrap_option

__all__ = ["produce", "read_records"]

#: How long librdkafka may try to deliver one message before reporting it failed.
DELIVERY_TIMEOUT_MS = 30_000


@dataclass
class _Deliveries:
    """Counts delivery reports; remembers the first failure to explain it."""

    delivered: int = 0
    failed: int = 0
    first_error: str | None = None
    failed_lines: list[int] = field(default_factory=list)

    def report(self, line: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.delivered += 1
            else:
                self.fail(line, error.str())

        return on_delivery

    def fail(self, line: int, reason: str) -> None:
        self.failed += 1
        self.failed_lines.append(line)
        if self.first_error is None:
            self.first_error = f"line {line}: {reason}"


def read_records(
    lines: Iterable[bytes], key_separator: bytes | None
) -> Iterator[tuple[int, bytes | None, bytes]]:
    """``(line number, key, value)`` per input line; the key is cut at the first separator.

    The line ending (``\\n`` or ``\\r\\n``) is not part of the message. A line without the
    separator when keys are parsed is a usage error, as in Kafka's console producer.
    """
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        line = line[:-1] if line.endswith(b"\r") else line
        if key_separator is None:
            yield number, None, line
            continue
        key, sep, value = line.partition(key_separator)
        if not sep:
            raise click.ClickException(
                f"line {number} has no key separator {key_separator.decode()!r} (--parse-key)"
            )
        yield number, key, value


@click.command()
@bootstrap_option
@click.argument("topic")
@click.option(
    "--parse-key",
    is_flag=True,
    help="Split each line at the first key separator into key and value.",
)
@click.option(
    "--key-separator",
    default="\t",
    show_default="TAB",
    help="What separates the key from the value with --parse-key.",
)
@click.option(
    "--partition",
    type=click.IntRange(min=0),
    default=None,
    help="Write every message to this partition (default: by key, or spread).",
)
@click.option(
    "--acks",
    type=click.Choice(["all", "-1", "1", "0"]),
    default="all",
    show_default=True,
    help="Acknowledgements the broker must collect per write.",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
    default="none",
    show_default=True,
    help="Compression of record batches.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="KEY=VALUE",
    help="A header added to every message (repeatable).",
)
def produce(
    bootstrap_server: str,
    topic: str,
    parse_key: bool,
    key_separator: str,
    partition: int | None,
    acks: str,
    compression: str,
    headers: tuple[str, ...],
) -> None:
    """Write one message per line of stdin to TOPIC; flush and report at end of input."""
    if parse_key and not key_separator:
        raise click.BadParameter("must not be empty", param_hint="--key-separator")
    header_list = [(k, v.encode()) for k, v in parse_pairs(headers, "--header")]
    errors = ErrorLog()
    producer = Producer(
        client_config(
            bootstrap_server,
            errors,
            **{
                "acks": acks,
                "compression.type": compression,
                "message.timeout.ms": DELIVERY_TIMEOUT_MS,
                "linger.ms": 5,
            },
        )
    )
    metadata = connect(producer, bootstrap_server, errors)
    partitions = _partition_count(producer, metadata.topics.get(topic), topic)
    if partition is not None and partition >= partitions:
        raise click.ClickException(
            f"topic {topic!r} has {partitions} partitions; there is no partition {partition}"
        )
    stdin = sys.stdin.buffer
    if stdin.isatty():
        click.echo(f"Type messages for {topic}, one per line; Ctrl-D to finish.", err=True)
    deliveries = _Deliveries()
    separator = key_separator.encode() if parse_key else None
    stopped: click.ClickException | None = None
    interrupted = False
    try:
        _send_all(producer, topic, stdin, separator, partition, header_list, deliveries)
    except click.ClickException as exc:  # bad input: deliver what was read, then report it
        stopped = exc
    except KeyboardInterrupt:
        interrupted = True
    unsent = producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 5)
    if unsent:
        deliveries.fail(0, f"{unsent} messages still queued at exit")
    _summarise(topic, deliveries)
    if stopped is not None:
        raise stopped
    if interrupted:
        sys.exit(130)


def _partition_count(producer: Producer, meta: TopicMetadata | None, topic: str) -> int:
    """Partitions of ``topic``; asking for an unknown topic lets the cluster auto-create it."""
    if meta is None:
        try:
            found = producer.list_topics(topic=topic, timeout=CONNECT_TIMEOUT_S).topics.get(topic)
        except KafkaException as exc:
            reason = error_text(exc)
            raise click.ClickException(f"cannot look up topic {topic!r}: {reason}") from None
        if found is None or (
            found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise click.ClickException(
                f"topic {topic!r} does not exist (and the cluster does not create topics on use)"
            )
        meta = found
    return len(meta.partitions) or 1


def _send_all(
    producer: Producer,
    topic: str,
    stdin: BinaryIO,
    key_separator: bytes | None,
    partition: int | None,
    headers: list[tuple[str, bytes]],
    deliveries: _Deliveries,
) -> None:
    for number, key, value in read_records(stdin, key_separator):
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=-1 if partition is None else partition,
                    headers=list(headers) if headers else None,
                    on_delivery=deliveries.report(number),
                )
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain it
                continue
            except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
                deliveries.fail(number, error_text(exc))
            break
        producer.poll(0)


def _summarise(topic: str, deliveries: _Deliveries) -> None:
    click.echo(f"produced {deliveries.delivered} messages to {topic}", err=True)
    if deliveries.failed:
        raise click.ClickException(
            f"{deliveries.failed} messages were not delivered to {topic} "
            f"(first failure: {deliveries.first_error})"
        )
