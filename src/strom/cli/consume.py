"""``strom consume TOPIC``: print records, one line each (like ``kafka-console-consumer``).

Without ``--group`` every partition is assigned directly: nothing is committed and no group is
joined. With ``--group`` the consumer joins that group and commits the offsets of the records
it has printed (and only those), synchronously before it exits, so a rerun continues exactly
where the previous run stopped.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import click
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from strom.cli.clients import ErrorLog, client_config, connect, error_code, error_text
from strom.cli.options import bootstrap_option
from strom.cli.render import Record, to_json, to_text
from strom.cli.signals import stop_on_signals

__all__ = ["consume"]

log = logging.getLogger("strom.cli")

#: Records fetched from librdkafka's queue at once (bounded by what is left of --max-messages).
BATCH = 500
#: How long one wait for records lasts; also how quickly Ctrl-C and --timeout-ms are noticed.
POLL_S = 0.2
#: librdkafka wants a group id even for a consumer that only assigns; this one is never joined.
_UNUSED_GROUP = "strom-cli-no-group"


@dataclass
class _Run:
    """What the consume loop knows: when to stop and how far it got."""

    max_messages: int | None
    idle_s: float | None
    count: int = 0
    stop: bool = False
    last_activity: float = 0.0

    def remaining(self) -> int:
        left = BATCH if self.max_messages is None else self.max_messages - self.count
        return min(BATCH, left)

    def active(self) -> None:
        self.last_activity = time.monotonic()

    def idle_too_long(self) -> bool:
        return self.idle_s is not None and time.monotonic() - self.last_activity >= self.idle_s


@click.command()
@bootstrap_option
@click.argument("topic")
@click.option(
    "--group",
    default=None,
    metavar="GROUP",
    help="Consume in this consumer group and commit what was printed.",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    help="Start at the earliest offset (in a group: when it has no committed offset).",
)
@click.option(
    "--max-messages", type=click.IntRange(min=1), default=None, help="Exit after this many records."
)
@click.option(
    "--timeout-ms",
    type=click.IntRange(min=0),
    default=None,
    help="Exit after this long without a record.",
)
@click.option("--print-key", is_flag=True, help="Print the key, a TAB, then the value.")
@click.option(
    "--print-metadata", is_flag=True, help="Prefix partition, offset and timestamp (TAB-separated)."
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: the value (UTF-8, other bytes escaped); json: one object per record.",
)
def consume(
    bootstrap_server: str,
    topic: str,
    group: str | None,
    from_beginning: bool,
    max_messages: int | None,
    timeout_ms: int | None,
    print_key: bool,
    print_metadata: bool,
    output: str,
) -> None:
    """Print the records of TOPIC, one line each, until stopped."""
    errors = ErrorLog()
    extra: dict[str, object] = {"enable.auto.offset.store": False}
    if group is None:
        extra.update({"group.id": _UNUSED_GROUP, "enable.auto.commit": False})
    else:
        extra.update(
            {
                "group.id": group,
                "enable.auto.commit": True,  # commits only stored offsets: records already printed
                "auto.offset.reset": "earliest" if from_beginning else "latest",
            }
        )
    consumer = Consumer(client_config(bootstrap_server, errors, **extra))
    run = _Run(max_messages, None if timeout_ms is None else timeout_ms / 1000)

    def render(record: Record) -> str:
        if output == "json":
            return to_json(record)
        return to_text(record, print_key=print_key, print_metadata=print_metadata)

    try:
        metadata = connect(consumer, bootstrap_server, errors)
        meta = metadata.topics.get(topic)
        if meta is None or not meta.partitions:
            raise click.ClickException(f"topic {topic!r} does not exist")
        if group is None:
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            consumer.assign([TopicPartition(topic, p, start) for p in sorted(meta.partitions)])
        else:
            consumer.subscribe([topic], on_assign=lambda _c, _p: run.active())
        run.active()
        with stop_on_signals(lambda _sig: setattr(run, "stop", True)):
            _loop(consumer, run, render, group is not None, sys.stdout.buffer)
    finally:
        _close(consumer, group)
    click.echo(f"processed {run.count} messages", err=True)


def _loop(
    consumer: Consumer,
    run: _Run,
    render: Callable[[Record], str],
    store: bool,
    out: BinaryIO,
) -> None:
    while not run.stop and run.remaining() > 0:
        batch = consumer.consume(num_messages=run.remaining(), timeout=POLL_S)
        for message in batch:
            if run.stop:
                break
            if _failed(message):
                continue
            try:
                out.write(render(Record.of(message)).encode() + b"\n")
            except BrokenPipeError:  # e.g. `strom consume t | head -1`: the reader is gone
                run.stop = True
                _silence_stdout()
                break
            run.count += 1
            if store:
                _store(consumer, message)
        if batch:
            run.active()
            try:
                out.flush()
            except BrokenPipeError:
                run.stop = True
                _silence_stdout()
        elif run.idle_too_long():
            break


def _failed(message: Message) -> bool:
    """True if ``message`` is an error event; fatal errors end the command."""
    error = message.error()
    if error is None:
        return False
    if error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise click.ClickException(f"cannot consume {message.topic()!r}: {error.str()}")
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer: %s", error.str())
    return True


def _store(consumer: Consumer, message: Message) -> None:
    try:
        consumer.store_offsets(message=message)
    except KafkaException as exc:  # the partition was revoked meanwhile; its new owner goes on
        log.info("not storing offset %s: %s", message.offset(), error_text(exc))


def _close(consumer: Consumer, group: str | None) -> None:
    """Commit what was printed (synchronously), then leave the group and close."""
    try:
        if group is not None:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if error_code(exc) != KafkaError._NO_OFFSET:  # nothing new since the last commit
                    raise click.ClickException(
                        f"cannot commit offsets of group {group!r}: {error_text(exc)}"
                    ) from None
    finally:
        consumer.close()


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so Python's exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
