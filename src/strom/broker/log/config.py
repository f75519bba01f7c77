"""Log configuration: broker defaults plus per-topic overrides under Kafka's config names."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from strom.broker.log.errors import InvalidConfigError

__all__ = ["FlushPolicy", "LogConfig"]

_LONG_MAX: Final = 2**63 - 1
_INT_MAX: Final = 2**31 - 1
_DAY_MS: Final = 24 * 3600 * 1000

# Kafka topic configs that are accepted and reported but have no effect on a single-node,
# store-as-received broker. The value given is the only one accepted (None: any value).
_ACCEPTED_NOOP: Final[dict[str, str | None]] = {
    "compression.type": "producer",
    "message.timestamp.type": "CreateTime",
    "min.insync.replicas": None,
    "unclean.leader.election.enable": None,
    "preallocate": None,
    "message.downconversion.enable": None,
}


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When appended bytes are forced to disk (fdatasync).

    ``always``: before ``append`` returns, so an acknowledged batch survives a crash or power
    loss. ``never``: left to the OS (data survives a process crash, not a power loss).
    ``interval``: at most every ``interval_ms``, by ``append`` when the interval has passed and by
    the server's timer through ``LogManager.flush_dirty``.
    """

    mode: Literal["always", "never", "interval"] = "always"
    interval_ms: int | None = None

    def __post_init__(self) -> None:
        if (self.mode == "interval") != (self.interval_ms is not None):
            raise ValueError("interval_ms is required for, and only for, mode 'interval'")
        if self.interval_ms is not None and self.interval_ms <= 0:
            raise ValueError(f"flush interval must be positive, got {self.interval_ms} ms")

    @property
    def always(self) -> bool:
        return self.mode == "always"

    @property
    def never(self) -> bool:
        return self.mode == "never"

    @classmethod
    def parse(cls, text: str) -> FlushPolicy:
        """``"always"``, ``"never"`` or an interval in milliseconds such as ``"250"``."""
        value = text.strip().lower()
        if value in ("always", "never"):
            return cls(value)  # type: ignore[arg-type]
        try:
            ms = int(value)
        except ValueError:
            raise ValueError(
                f"flush policy must be 'always', 'never' or milliseconds, got {text!r}"
            ) from None
        return cls("interval", ms)

    def __str__(self) -> str:
        return self.mode if self.interval_ms is None else str(self.interval_ms)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Effective settings of one partition log. Field meanings follow the Kafka config named in
    each comment; ``cleanup.policy`` is always ``delete`` (compaction is not supported)."""

    segment_bytes: int = 1 << 30  # segment.bytes
    segment_ms: int = 7 * _DAY_MS  # segment.ms
    retention_ms: int = 7 * _DAY_MS  # retention.ms; -1 keeps data forever
    retention_bytes: int = -1  # retention.bytes; -1 means no size limit
    index_interval_bytes: int = 4096  # index.interval.bytes
    max_message_bytes: int = 1048588  # max.message.bytes: the largest batch accepted
    file_delete_delay_ms: int = 60_000  # file.delete.delay.ms: deleted segments stay readable
    flush: FlushPolicy = field(default_factory=FlushPolicy)  # flush.ms / flush.messages

    def __post_init__(self) -> None:
        checks = [
            (14 <= self.segment_bytes <= _INT_MAX, "segment.bytes", self.segment_bytes),
            (self.segment_ms >= 1, "segment.ms", self.segment_ms),
            (self.retention_ms >= -1, "retention.ms", self.retention_ms),
            (self.retention_bytes >= -1, "retention.bytes", self.retention_bytes),
            (self.index_interval_bytes >= 0, "index.interval.bytes", self.index_interval_bytes),
            (0 <= self.max_message_bytes <= _INT_MAX, "max.message.bytes", self.max_message_bytes),
            (self.file_delete_delay_ms >= 0, "file.delete.delay.ms", self.file_delete_delay_ms),
        ]
        for ok, name, value in checks:
            if not ok:
                raise InvalidConfigError(f"invalid value {value} for {name}")

    @classmethod
    def from_topic_configs(
        cls, configs: Mapping[str, str | None], base: LogConfig | None = None
    ) -> LogConfig:
        """``base`` (default: Kafka's defaults) with Kafka-named overrides applied.

        Raises :class:`InvalidConfigError` for unknown names, non-numeric values, values out of
        range, ``cleanup.policy`` other than ``delete``, and flush settings it cannot honour.
        A ``None`` value means "use the default" (as in IncrementalAlterConfigs DELETE).
        """
        base = base if base is not None else cls()
        changes: dict[str, object] = {}
        flush_ms: int | None = None
        flush_messages: int | None = None
        for name, raw in configs.items():
            if raw is None:
                continue
            if name in _NUMERIC:
                changes[_NUMERIC[name]] = _parse_int(name, raw)
            elif name == "cleanup.policy":
                if raw.strip().lower() != "delete":
                    raise InvalidConfigError(
                        f"cleanup.policy={raw!r} is not supported: strom only deletes old "
                        "segments (log compaction is not implemented)"
                    )
            elif name == "flush.ms":
                flush_ms = _parse_int(name, raw)
            elif name == "flush.messages":
                flush_messages = _parse_int(name, raw)
            elif name in _ACCEPTED_NOOP:
                only = _ACCEPTED_NOOP[name]
                if only is not None and raw != only:
                    raise InvalidConfigError(f"{name}={raw!r} is not supported (only {only!r})")
            else:
                raise InvalidConfigError(f"unknown topic config {name!r}")
        if flush_ms is not None or flush_messages is not None:
            changes["flush"] = _flush_from(flush_ms, flush_messages, base.flush)
        try:
            return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(str(exc)) from exc

    def describe(self) -> dict[str, str]:
        """The effective config under Kafka's names, values as strings (for DescribeConfigs)."""
        if self.flush.always:
            flush_ms, flush_messages = 0, 1
        elif self.flush.interval_ms is not None:
            flush_ms, flush_messages = self.flush.interval_ms, _LONG_MAX
        else:
            flush_ms, flush_messages = _LONG_MAX, _LONG_MAX
        out = {kafka: str(getattr(self, attr)) for kafka, attr in _NUMERIC.items()}
        out.update(
            {
                "cleanup.policy": "delete",
                "flush.ms": str(flush_ms),
                "flush.messages": str(flush_messages),
                "compression.type": "producer",
                "message.timestamp.type": "CreateTime",
                "min.insync.replicas": "1",
            }
        )
        return out


_NUMERIC: Final[dict[str, str]] = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "max.message.bytes": "max_message_bytes",
    "file.delete.delay.ms": "file_delete_delay_ms",
}


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidConfigError(f"{name} must be an integer, got {raw!r}") from None


def _flush_from(ms: int | None, messages: int | None, current: FlushPolicy) -> FlushPolicy:
    """Map Kafka's flush.ms / flush.messages onto a FlushPolicy.

    flush.messages=1 or flush.ms=0 is ``always``; both at Long.MAX is ``never``; any other
    flush.ms is an interval. Other flush.messages values cannot be honoured and are rejected.
    """
    if messages is not None and messages not in (1, _LONG_MAX):
        raise InvalidConfigError(f"flush.messages={messages} is not supported (1 or {_LONG_MAX})")
    if messages == 1 or ms == 0:
        return FlushPolicy("always")
    if ms is None:
        return current if messages is None else FlushPolicy("never")
    if ms < 0:
        raise InvalidConfigError(f"invalid value {ms} for flush.ms")
    if ms >= _LONG_MAX:
        return FlushPolicy("never")
    return FlushPolicy("interval", ms)
