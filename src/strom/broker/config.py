"""Broker-wide settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from strom.broker.log import FlushPolicy, LogConfig

__all__ = ["BrokerConfig"]


@dataclass(slots=True)
class BrokerConfig:
    """Everything a broker needs to start. ``port=0`` picks a free ephemeral port."""

    data_dir: Path = Path("strom-data")
    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str | None = None
    node_id: int = 1
    auto_create_topics: bool = True
    default_partitions: int = 1
    max_request_bytes: int = 100 * 1024 * 1024
    initial_rebalance_delay_ms: int = 300
    # Kafka's group.min.session.timeout.ms is 6 s; strom allows shorter sessions (tests, demos).
    min_session_timeout_ms: int = 1000
    retention_check_interval_ms: int = 60_000
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def flush(self) -> FlushPolicy:
        return self.log.flush
