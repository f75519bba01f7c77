"""``strom groups``: list consumer groups and describe one (like ``kafka-consumer-groups``)."""

from __future__ import annotations

from dataclasses import dataclass

import click
from confluent_kafka import (
    OFFSET_INVALID,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)

from strom.cli.clients import REQUEST_TIMEOUT_S, admin_client, result
from strom.cli.kafka_admin import AdminClient, ConsumerGroupDescription, latest
from strom.cli.options import bootstrap_option
from strom.cli.output import console, table

__all__ = ["groups"]


@dataclass(frozen=True)
class PartitionLag:
    """One row of ``groups describe``: where the group is in one partition."""

    topic: str
    partition: int
    committed: int | None
    log_end: int | None
    member: str = "-"
    host: str = "-"
    client_id: str = "-"

    @property
    def lag(self) -> int | None:
        if self.committed is None or self.log_end is None:
            return None
        return max(self.log_end - self.committed, 0)


@click.group()
def groups() -> None:
    """List and describe consumer groups."""


@groups.command("list")
@bootstrap_option
def list_(bootstrap_server: str) -> None:
    """List the consumer groups and their states."""
    admin, _ = admin_client(bootstrap_server)
    listing = result(
        admin.list_consumer_groups(request_timeout=REQUEST_TIMEOUT_S), "cannot list consumer groups"
    )
    for error in listing.errors or []:
        click.echo(f"warning: {error}", err=True)
    rows = table("Group", "State")
    for found in sorted(listing.valid or [], key=lambda g: g.group_id):
        rows.add_row(found.group_id, _state_name(getattr(found, "state", None)))
    console().print(rows)


@groups.command()
@bootstrap_option
@click.option("--group", required=True, metavar="GROUP", help="The consumer group.")
def describe(bootstrap_server: str, group: str) -> None:
    """Show a group's state, members, and per partition its committed offset and lag."""
    admin, _ = admin_client(bootstrap_server)
    futures = admin.describe_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)
    description: ConsumerGroupDescription = result(futures[group], f"cannot describe {group!r}")
    committed = _committed(admin, group)
    state = getattr(description, "state", ConsumerGroupState.UNKNOWN)
    if state in (ConsumerGroupState.DEAD, ConsumerGroupState.UNKNOWN) and not committed:
        raise click.ClickException(f"consumer group {group!r} does not exist")
    rows = _partition_rows(admin, description, committed)
    out = console()
    coordinator = description.coordinator
    total = sum(r.lag or 0 for r in rows)
    out.print(
        f"Group: {group}  State: {_state_name(state)}  "
        f"Protocol: {description.partition_assignor or '-'}  "
        f"Coordinator: {coordinator.id} ({coordinator.host}:{coordinator.port})  "
        f"Members: {len(description.members)}  Total lag: {total}"
    )
    out.print()
    offsets = table(
        "Topic",
        "Partition",
        "Current offset",
        "Log-end offset",
        "Lag",
        "Consumer id",
        "Host",
        "Client id",
        numeric=("Partition", "Current offset", "Log-end offset", "Lag"),
    )
    for r in rows:
        offsets.add_row(
            r.topic,
            str(r.partition),
            _num(r.committed),
            _num(r.log_end),
            _num(r.lag),
            r.member,
            r.host,
            r.client_id,
        )
    out.print(offsets)
    out.print()
    members = table("Consumer id", "Client id", "Host", "Assigned partitions")
    for m in description.members:
        members.add_row(
            m.member_id, m.client_id, m.host, _partitions_text(m.assignment.topic_partitions)
        )
    out.print(members)


def _committed(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets (partitions without a commit are left out)."""
    request = [ConsumerGroupTopicPartitions(group)]
    futures = admin.list_consumer_group_offsets(request, request_timeout=REQUEST_TIMEOUT_S)
    answer = result(futures[group], f"cannot fetch the committed offsets of {group!r}")
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in answer.topic_partitions or []
        if tp.offset != OFFSET_INVALID and tp.offset >= 0
    }


def _partition_rows(
    admin: AdminClient,
    description: ConsumerGroupDescription,
    committed: dict[tuple[str, int], int],
) -> list[PartitionLag]:
    owners = {
        (tp.topic, tp.partition): m
        for m in description.members
        for tp in m.assignment.topic_partitions
    }
    keys = sorted(set(committed) | set(owners))
    log_end = _log_end_offsets(admin, keys)
    rows = []
    for key in keys:
        owner = owners.get(key)
        rows.append(
            PartitionLag(
                topic=key[0],
                partition=key[1],
                committed=committed.get(key),
                log_end=log_end.get(key),
                member=owner.member_id if owner else "-",
                host=owner.host if owner else "-",
                client_id=owner.client_id if owner else "-",
            )
        )
    return rows


def _log_end_offsets(admin: AdminClient, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    if not keys:
        return {}
    spec = latest()
    futures = admin.list_offsets(
        {TopicPartition(t, p): spec for t, p in keys}, request_timeout=REQUEST_TIMEOUT_S
    )
    found = {}
    for tp, future in futures.items():
        try:
            found[(tp.topic, tp.partition)] = future.result(timeout=REQUEST_TIMEOUT_S + 5).offset
        except (KafkaException, TimeoutError):
            continue  # e.g. the topic was deleted; the row shows "-"
    return found


def _partitions_text(partitions: list[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items()))


def _state_name(state: ConsumerGroupState | None) -> str:
    """Kafka's spelling of a group state: ``PreparingRebalance``, ``Stable``, ..."""
    if state is None:
        return "-"
    return "".join(word.capitalize() for word in state.name.split("_"))


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)
