"""``strom transactions``: list transactional ids and describe one (like ``kafka-transactions``).

librdkafka has no client for the transaction admin APIs (KIP-664), so these commands use
kafka-python's admin client: ListTransactions to every broker, DescribeTransactions to the
transactional id's coordinator. They work against any Kafka cluster (2.8+ for ListTransactions
and DescribeTransactions), not only strom's broker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from strom.cli.clients import REQUEST_TIMEOUT_S
from strom.cli.options import bootstrap_option
from strom.cli.output import console, table

__all__ = ["transactions"]

_output_option = click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table: for reading; json: one object (describe) or one object per line (list).",
)


@contextmanager
def _admin(bootstrap_server: str) -> Iterator[Any]:
    """kafka-python's admin client, every failure a ClickException naming the cluster."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_server,
            client_id="strom-cli",
            request_timeout_ms=int(REQUEST_TIMEOUT_S * 1000),
        )
    except KafkaError as exc:
        raise click.ClickException(f"cannot reach {bootstrap_server}: {exc}") from None
    try:
        yield admin
    except KafkaError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        admin.close()


@click.group()
def transactions() -> None:
    """List and describe transactional ids and their transactions."""


@transactions.command("list")
@bootstrap_option
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="Only transactions in this state (Empty, Ongoing, PrepareCommit, ...); repeatable.",
)
@_output_option
def list_(bootstrap_server: str, states: tuple[str, ...], output: str) -> None:
    """List every transactional id, its producer id and its state."""
    with _admin(bootstrap_server) as admin:
        by_broker = admin.list_transactions(state_filters=list(states) or None)
    rows = sorted(
        (
            (str(t.transactional_id), int(t.producer_id), str(t.state.value), int(broker))
            for broker, listing in by_broker.items()
            for t in listing
        ),
    )
    if output == "json":
        for tid, pid, state, broker in rows:
            click.echo(
                json.dumps(
                    {"transactional_id": tid, "producer_id": pid, "state": state, "broker": broker}
                )
            )
        return
    out = table("Transactional id", "Producer id", "State", "Coordinator", numeric=("Producer id",))
    for tid, pid, state, broker in rows:
        out.add_row(tid, str(pid), state, str(broker))
    console().print(out)


@transactions.command()
@bootstrap_option
@click.argument("transactional_id")
@_output_option
def describe(bootstrap_server: str, transactional_id: str, output: str) -> None:
    """Show a transactional id's state, producer id and epoch, and its open transaction."""
    from kafka.errors import TransactionalIdNotFoundError

    with _admin(bootstrap_server) as admin:
        try:
            d = admin.describe_transactions([transactional_id])[transactional_id]
        except TransactionalIdNotFoundError:
            raise click.ClickException(
                f"transactional id {transactional_id!r} does not exist"
            ) from None
    partitions = sorted((tp.topic, tp.partition) for tp in d.topic_partitions)
    start = int(d.transaction_start_time_ms)
    fields: dict[str, Any] = {
        "transactional_id": transactional_id,
        "coordinator": int(d.coordinator_id),
        "state": str(d.state.value),
        "producer_id": int(d.producer_id),
        "producer_epoch": int(d.producer_epoch),
        "transaction_timeout_ms": int(d.transaction_timeout_ms),
        "transaction_start_time_ms": start,
        "partitions": [[t, p] for t, p in partitions],
    }
    if output == "json":
        click.echo(json.dumps(fields))
        return
    out = table("Field", "Value")
    out.add_row("Transactional id", transactional_id)
    out.add_row("Coordinator", str(fields["coordinator"]))
    out.add_row("State", fields["state"])
    out.add_row("Producer id", str(fields["producer_id"]))
    out.add_row("Producer epoch", str(fields["producer_epoch"]))
    out.add_row("Timeout", f"{fields['transaction_timeout_ms']} ms")
    if start >= 0:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start / 1000))
        out.add_row("Started", f"{started} ({max(time.time() * 1000 - start, 0) / 1000:.1f} s ago)")
    else:
        out.add_row("Started", "-")
    out.add_row("Partitions", _partitions_text(partitions))
    console().print(out)


def _partitions_text(partitions: list[tuple[str, int]]) -> str:
    if not partitions:
        return "-"
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    return " ".join(f"{t}[{','.join(map(str, ps))}]" for t, ps in sorted(by_topic.items()))
