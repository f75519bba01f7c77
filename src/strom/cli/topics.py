"""``strom topics``: create, delete, list, describe and alter topics (flags as ``kafka-topics``)."""

from __future__ import annotations

import click
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from strom.cli.clients import (
    REQUEST_TIMEOUT_S,
    admin_client,
    error_code,
    error_text,
    parse_pairs,
    result,
    results,
)
from strom.cli.kafka_admin import (
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
    TopicMetadata,
    earliest,
    latest,
)
from strom.cli.options import bootstrap_option
from strom.cli.output import console, table

__all__ = ["topics"]

_topic_option = click.option("--topic", required=True, metavar="TOPIC", help="The topic's name.")


@click.group()
def topics() -> None:
    """Create, delete, list, describe and alter topics."""


@topics.command()
@bootstrap_option
@_topic_option
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Number of partitions (default: the broker's default).",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1),
    default=None,
    help="Replicas of each partition (default: the broker's default).",
)
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A topic configuration override, e.g. retention.ms=86400000 (repeatable).",
)
@click.option("--if-not-exists", is_flag=True, help="Succeed if the topic already exists.")
def create(
    bootstrap_server: str,
    topic: str,
    partitions: int | None,
    replication_factor: int | None,
    configs: tuple[str, ...],
    if_not_exists: bool,
) -> None:
    """Create a topic."""
    config = dict(parse_pairs(configs, "--config"))
    admin, _ = admin_client(bootstrap_server)
    new = NewTopic(
        topic,
        num_partitions=partitions if partitions is not None else -1,
        replication_factor=replication_factor if replication_factor is not None else -1,
        config=config,
    )
    future = admin.create_topics([new], request_timeout=REQUEST_TIMEOUT_S)[topic]
    try:
        future.result(timeout=REQUEST_TIMEOUT_S + 5)
    except KafkaException as exc:
        if if_not_exists and error_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
            click.echo(f"Topic {topic} already exists.")
            return
        raise click.ClickException(f"cannot create topic {topic!r}: {error_text(exc)}") from None
    except TimeoutError:
        raise click.ClickException(f"cannot create topic {topic!r}: no answer in time") from None
    click.echo(f"Created topic {topic}.")


@topics.command()
@bootstrap_option
@_topic_option
@click.option("--if-exists", is_flag=True, help="Succeed if the topic does not exist.")
def delete(bootstrap_server: str, topic: str, if_exists: bool) -> None:
    """Delete a topic and all its data."""
    admin, metadata = admin_client(bootstrap_server)
    if topic not in metadata.topics:
        if if_exists:
            return
        raise click.ClickException(f"topic {topic!r} does not exist")
    futures = admin.delete_topics([topic], request_timeout=REQUEST_TIMEOUT_S)
    results(futures, f"cannot delete topic {topic!r}")
    click.echo(f"Deleted topic {topic}.")


@topics.command("list")
@bootstrap_option
@click.option("--exclude-internal", is_flag=True, help="Hide internal topics (names with '__').")
def list_(bootstrap_server: str, exclude_internal: bool) -> None:
    """List the topics, with their partition count and replication factor."""
    _, metadata = admin_client(bootstrap_server)
    rows = table(
        "Topic", "Partitions", "Replication factor", numeric=("Partitions", "Replication factor")
    )
    for name in sorted(metadata.topics):
        if exclude_internal and name.startswith("__"):
            continue
        meta = metadata.topics[name]
        rows.add_row(name, str(len(meta.partitions)), str(_replication_factor(meta)))
    console().print(rows)


@topics.command()
@bootstrap_option
@click.option("--topic", default=None, metavar="TOPIC", help="Only this topic (default: all).")
def describe(bootstrap_server: str, topic: str | None) -> None:
    """Show partitions (leader, replicas, earliest and latest offsets) and configs of topics."""
    admin, metadata = admin_client(bootstrap_server)
    names = sorted(metadata.topics) if topic is None else [topic]
    if topic is not None and topic not in metadata.topics:
        raise click.ClickException(f"topic {topic!r} does not exist")
    earliest, latest = _offsets(admin, metadata, names)
    configs = _topic_configs(admin, names)
    out = console()
    for name in names:
        meta = metadata.topics[name]
        overrides = ",".join(f"{k}={v}" for k, v in sorted(configs.get(name, {}).items()))
        out.print(
            f"[bold]Topic: {name}[/]  PartitionCount: {len(meta.partitions)}  "
            f"ReplicationFactor: {_replication_factor(meta)}  Configs: {overrides}",
            soft_wrap=True,
        )
        rows = table(
            "Partition",
            "Leader",
            "Replicas",
            "Isr",
            "Earliest offset",
            "Latest offset",
            numeric=("Partition", "Earliest offset", "Latest offset"),
        )
        for pid in sorted(meta.partitions):
            part = meta.partitions[pid]
            rows.add_row(
                str(pid),
                str(part.leader),
                ",".join(map(str, part.replicas)),
                ",".join(map(str, part.isrs)),
                earliest.get((name, pid), "?"),
                latest.get((name, pid), "?"),
            )
        out.print(rows)
        out.print()


@topics.command()
@bootstrap_option
@_topic_option
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    required=True,
    help="The new total number of partitions (partitions can only be added).",
)
def alter(bootstrap_server: str, topic: str, partitions: int) -> None:
    """Add partitions to a topic."""
    admin, metadata = admin_client(bootstrap_server)
    meta = metadata.topics.get(topic)
    if meta is None:
        raise click.ClickException(f"topic {topic!r} does not exist")
    if partitions <= len(meta.partitions):
        raise click.ClickException(
            f"topic {topic!r} has {len(meta.partitions)} partitions; "
            f"the new count must be larger, got {partitions}"
        )
    futures = admin.create_partitions(
        [NewPartitions(topic, partitions)], request_timeout=REQUEST_TIMEOUT_S
    )
    results(futures, f"cannot add partitions to {topic!r}")
    click.echo(f"Topic {topic} now has {partitions} partitions.")


def _replication_factor(meta: TopicMetadata) -> int:
    return max((len(p.replicas) for p in meta.partitions.values()), default=0)


def _offsets(
    admin: AdminClient, metadata: ClusterMetadata, names: list[str]
) -> tuple[dict[tuple[str, int], str], dict[tuple[str, int], str]]:
    """Earliest and latest offset of every partition of ``names`` ("?" where unknown)."""
    partitions = [
        TopicPartition(name, pid) for name in names for pid in metadata.topics[name].partitions
    ]
    if not partitions:
        return {}, {}
    return _list_offsets(admin, partitions, earliest()), _list_offsets(admin, partitions, latest())


def _list_offsets(
    admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec
) -> dict[tuple[str, int], str]:
    futures = admin.list_offsets({tp: spec for tp in partitions}, request_timeout=REQUEST_TIMEOUT_S)
    found: dict[tuple[str, int], str] = {}
    for tp, future in futures.items():
        try:
            info = future.result(timeout=REQUEST_TIMEOUT_S + 5)
        except (KafkaException, TimeoutError):
            continue
        found[(tp.topic, tp.partition)] = str(info.offset)
    return found


def _topic_configs(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's own configuration overrides (what ``kafka-topics --describe`` shows)."""
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=REQUEST_TIMEOUT_S)
    configs: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        entries = result(future, f"cannot describe the configs of {resource.name!r}")
        configs[resource.name] = {
            entry.name: entry.value
            for entry in entries.values()
            if _is_topic_override(entry.source) and entry.value is not None
        }
    return configs


def _is_topic_override(source: object) -> bool:
    # librdkafka hands the source over as the enum or as its int value, depending on version.
    topic = ConfigSource.DYNAMIC_TOPIC_CONFIG
    return source == topic or source == topic.value
