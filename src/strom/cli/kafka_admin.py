"""confluent-kafka's admin API names, imported in one place.

``confluent_kafka.admin`` re-exports its public classes without an ``__all__``, which
``mypy --strict`` reads as private; importing them here once keeps the ignore in one line.
"""

from __future__ import annotations

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    ConfigSource,
    ConsumerGroupDescription,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
    TopicMetadata,
)

__all__ = [
    "AdminClient",
    "ClusterMetadata",
    "ConfigResource",
    "ConfigSource",
    "ConsumerGroupDescription",
    "NewPartitions",
    "NewTopic",
    "OffsetSpec",
    "ResourceType",
    "TopicMetadata",
    "earliest",
    "latest",
]


def earliest() -> OffsetSpec:
    """``OffsetSpec.earliest()``, typed."""
    spec: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    return spec


def latest() -> OffsetSpec:
    """``OffsetSpec.latest()``, typed."""
    spec: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    return spec
