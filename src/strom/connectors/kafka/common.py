"""What the Kafka connectors share: client configuration, bounded waits, errors.

librdkafka retries forever by default; every wait here is bounded so a connector pointed at an
unreachable cluster or a missing topic fails within seconds with a message naming both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException

__all__ = [
    "CONNECT_TIMEOUT_S",
    "ClientErrors",
    "KafkaConnectorError",
    "client_config",
    "partition_count",
]

#: How long a connector waits for the cluster's first answer (metadata, offsets).
CONNECT_TIMEOUT_S = 10.0
#: Once every broker has refused connections, how long to keep trying (one may be starting).
ALL_DOWN_GRACE_S = 2.0
#: How long a topic may be unknown before a source gives up (new topics take a moment to appear).
UNKNOWN_TOPIC_GRACE_S = 2.0

log = logging.getLogger("strom.connectors")
_librdkafka_log = logging.getLogger("strom.connectors.librdkafka")


class KafkaConnectorError(RuntimeError):
    """A Kafka source or sink cannot go on (unreachable cluster, missing topic, lost records)."""


class _LibrdkafkaLogger(logging.Logger):
    """Demotes librdkafka's own log lines (a broker restart logs dozens of connection errors);
    connectors report failures themselves. Shown at INFO/DEBUG of ``strom.connectors.librdkafka``.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        demoted = logging.INFO if level >= logging.WARNING else logging.DEBUG
        _librdkafka_log.log(demoted, msg, *args, **kwargs)


_LOGGER = _LibrdkafkaLogger("strom.connectors.librdkafka.adapter")


class ClientErrors:
    """An ``error_cb``: remembers the last error, and a fatal one, for the connector to raise."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.last: KafkaError | None = None
        self.fatal: KafkaError | None = None
        self.all_down_since: float | None = None

    def __call__(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.all_down_since is None:
                self.all_down_since = time.monotonic()
        else:
            self.last = error
        if error.fatal():
            self.fatal = error
        log.debug("%s: %s", self.what, error.str())

    def raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise KafkaConnectorError(f"{self.what}: fatal client error: {self.fatal.str()}")

    def describe(self) -> str:
        return str(self.last.str()) if self.last is not None else "no answer"


def client_config(
    bootstrap_servers: str,
    client_id: str,
    errors: ClientErrors,
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """librdkafka configuration: shared settings, then ``defaults``, then the user's
    ``overrides`` (librdkafka property names), which win."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "error_cb": errors,
        "logger": _LOGGER,
        "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
    }
    config.update(defaults)
    config.update(overrides or {})
    return config


def partition_count(client: Any, topic: str, bootstrap_servers: str, errors: ClientErrors) -> int:
    """The number of partitions of ``topic``, from cluster metadata (bounded wait)."""
    start = time.monotonic()
    unknown_since: float | None = None
    while True:
        now = time.monotonic()
        try:
            metadata = client.list_topics(topic, timeout=0.5)
        except KafkaException:
            client.poll(0)  # serves error_cb
            down = errors.all_down_since
            if now - start >= CONNECT_TIMEOUT_S or (
                down is not None and now - down >= ALL_DOWN_GRACE_S
            ):
                raise KafkaConnectorError(
                    f"cannot reach the Kafka cluster at {bootstrap_servers}: {errors.describe()}"
                ) from None
            continue
        meta = metadata.topics.get(topic)
        error = None if meta is None else meta.error
        if meta is not None and error is None and meta.partitions:
            return len(meta.partitions)
        if error is not None and error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaConnectorError(f"topic {topic!r} at {bootstrap_servers}: {error.str()}")
        unknown_since = now if unknown_since is None else unknown_since
        if now - unknown_since >= UNKNOWN_TOPIC_GRACE_S:
            raise KafkaConnectorError(
                f"topic {topic!r} does not exist at {bootstrap_servers} "
                f"(create it, e.g. `strom topics create --topic {topic} --partitions N`)"
            )
        time.sleep(0.1)
