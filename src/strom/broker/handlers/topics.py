"""Shared topic helpers for handlers: lookup by name or id, auto-creation, error mapping."""

from __future__ import annotations

import logging

from strom.broker.log import (
    InvalidTopicError,
    LogError,
    TopicExistsError,
    TopicInfo,
    validate_topic_name,
)
from strom.broker.state import BrokerState
from strom.kafka.protocol.errors import ErrorCode

__all__ = ["ensure_topic", "topic_by_id"]

log = logging.getLogger("strom.broker")


def ensure_topic(state: BrokerState, name: str, allow_create: bool) -> TopicInfo | ErrorCode:
    """The topic, auto-created when allowed, or the error code a client should see."""
    info = state.logs.topics().get(name)
    if info is not None:
        return info
    try:
        validate_topic_name(name)
    except InvalidTopicError:
        # Kafka reports an invalid name as such whether or not it may create the topic
        # (Metadata with allow_auto_topic_creation=false included), not as an unknown topic.
        return ErrorCode.INVALID_TOPIC_EXCEPTION
    if not (allow_create and state.config.auto_create_topics):
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    try:
        info = state.logs.create_topic(name, state.config.default_partitions)
    except InvalidTopicError:
        return ErrorCode.INVALID_TOPIC_EXCEPTION
    except TopicExistsError:
        return state.logs.topics()[name]
    except LogError as exc:
        log.error("cannot auto-create topic %r: %s", name, exc)
        return ErrorCode.KAFKA_STORAGE_ERROR
    log.info("auto-created topic %r with %d partition(s)", name, info.partitions)
    return info


def topic_by_id(state: BrokerState, topic_id: bytes) -> TopicInfo | None:
    for info in state.logs.topics().values():
        if info.topic_id == topic_id:
            return info
    return None
