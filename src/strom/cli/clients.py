"""confluent-kafka clients for the CLI: one configuration, bounded waits, errors as ClickExceptions.

Every client command talks to the cluster through librdkafka, so it works against any Kafka
cluster. librdkafka retries forever by default; the helpers here bound every wait so a command
against an unreachable broker fails within seconds with a message naming the address.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click
from confluent_kafka import KafkaError, KafkaException

from strom.cli.kafka_admin import AdminClient, ClusterMetadata

__all__ = [
    "CONNECT_TIMEOUT_S",
    "REQUEST_TIMEOUT_S",
    "ErrorLog",
    "admin_client",
    "client_config",
    "connect",
    "error_text",
    "parse_pairs",
    "result",
    "results",
]

#: How long a command waits for a first answer from the cluster before giving up.
CONNECT_TIMEOUT_S = 10.0
#: Once every broker has refused connections, how long to keep trying (a broker may be starting).
ALL_DOWN_GRACE_S = 2.0
#: Upper bound for one admin request (CreateTopics, DescribeConfigs, ...).
REQUEST_TIMEOUT_S = 15.0

K = TypeVar("K")

_log = logging.getLogger("strom.cli.librdkafka")
_warn = logging.getLogger("strom.cli")


class _LibrdkafkaLogger(logging.Logger):
    """Demotes librdkafka's own log lines: the CLI reports failures itself, clearly, once.

    librdkafka logs every failed connection attempt at error level; shown as-is, a refused
    connection prints dozens of lines. They stay available with ``strom -v`` (warnings and
    errors) and ``strom -vv`` (everything).
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        demoted = logging.INFO if level >= logging.WARNING else logging.DEBUG
        _log.log(demoted, msg, *args, **kwargs)


_LIBRDKAFKA_LOGGER = _LibrdkafkaLogger("strom.cli.librdkafka.adapter")


class ErrorLog:
    """An ``error_cb`` that remembers what librdkafka reported (it is served by ``poll``).

    Until :func:`connect` succeeds the errors explain why it fails; after that, each new one is
    logged as a warning (once while it repeats), so a long-running command says why it stalls.
    """

    def __init__(self) -> None:
        self.last: KafkaError | None = None
        self.all_down_since: float | None = None
        self.fatal: KafkaError | None = None
        self.connected = False
        self._warned: str | None = None

    def __call__(self, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            if self.all_down_since is None:
                self.all_down_since = time.monotonic()
        else:
            self.last = error
        if error.fatal():
            self.fatal = error
        text = str(error.str())
        if self.connected and text != self._warned:
            self._warned = text
            _warn.warning("kafka client: %s", text)

    def reset(self) -> None:
        self.all_down_since = None
        self.connected = True

    def describe(self, timeout_s: float) -> str:
        if self.last is not None:
            return str(self.last.str())
        if self.all_down_since is not None:
            return "every broker is down or closed the connection"
        return f"no answer within {timeout_s:.0f} s"


def client_config(bootstrap_server: str, errors: ErrorLog, **extra: Any) -> dict[str, Any]:
    """The configuration every CLI client shares, plus ``extra`` (librdkafka property names)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_server,
        "client.id": "strom-cli",
        "error_cb": errors,
        "logger": _LIBRDKAFKA_LOGGER,
        "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
    }
    config.update(extra)
    return config


def error_text(exc: BaseException) -> str:
    """The human part of a confluent-kafka exception (the broker's message when it sent one)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc) or type(exc).__name__


def error_code(exc: BaseException) -> int | None:
    """The Kafka error code carried by a confluent-kafka exception, if any."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return int(exc.args[0].code())
    return None


def connect(
    client: Any,
    bootstrap_server: str,
    errors: ErrorLog,
    *,
    serve: Callable[[], object] | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> ClusterMetadata:
    """Fetch cluster metadata, proving the cluster answers; fail clearly if it does not.

    ``serve`` runs librdkafka's callbacks (``poll(0)``) so ``errors`` learns why connecting
    fails; by default ``client.poll(0)``. Gives up after ``timeout_s``, or earlier once every
    broker has refused connections for :data:`ALL_DOWN_GRACE_S`.
    """
    deadline = time.monotonic() + timeout_s
    serve = serve or (lambda: client.poll(0))
    while True:
        try:
            metadata: ClusterMetadata = client.list_topics(timeout=0.5)
        except KafkaException:
            serve()
        else:
            errors.reset()
            return metadata
        now = time.monotonic()
        down = errors.all_down_since
        if (
            errors.fatal is not None
            or now >= deadline
            or (down is not None and now - down >= ALL_DOWN_GRACE_S)
        ):
            reason = errors.describe(timeout_s)
            raise click.ClickException(
                f"cannot connect to the Kafka cluster at {bootstrap_server}: {reason}"
            )


def admin_client(bootstrap_server: str) -> tuple[AdminClient, ClusterMetadata]:
    """An AdminClient whose cluster answered, and the metadata it answered with."""
    errors = ErrorLog()
    admin = AdminClient(client_config(bootstrap_server, errors))
    metadata = connect(admin, bootstrap_server, errors)
    return admin, metadata


def result(future: concurrent.futures.Future[Any], what: str) -> Any:
    """Wait for one admin future; a failure or a timeout becomes a ClickException."""
    try:
        return future.result(timeout=REQUEST_TIMEOUT_S + 5)
    except concurrent.futures.TimeoutError:
        raise click.ClickException(f"{what}: no answer within {REQUEST_TIMEOUT_S:.0f} s") from None
    except KafkaException as exc:
        raise click.ClickException(f"{what}: {error_text(exc)}") from None


def results(futures: Mapping[K, concurrent.futures.Future[Any]], what: str) -> dict[K, Any]:
    """Wait for every admin future of one request; the first failure becomes a ClickException."""
    return {key: result(future, what) for key, future in futures.items()}


def parse_pairs(values: Iterable[str], option: str) -> list[tuple[str, str]]:
    """Parse repeated ``KEY=VALUE`` option values, in order (a key may repeat)."""
    pairs = []
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint=option)
        pairs.append((key, value))
    return pairs
