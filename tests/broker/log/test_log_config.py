"""LogConfig and FlushPolicy: parsing, Kafka config names, validation."""

from __future__ import annotations

import pytest

from strom.broker.log import FlushPolicy, InvalidConfigError, LogConfig


def test_flush_policy_parse() -> None:
    assert FlushPolicy.parse("always").always
    assert FlushPolicy.parse(" NEVER ").never
    p = FlushPolicy.parse("250")
    assert (p.mode, p.interval_ms, str(p)) == ("interval", 250, "250")
    assert FlushPolicy().always and FlushPolicy().interval_ms is None
    for bad in ("sometimes", "0", "-5", ""):
        with pytest.raises(ValueError):
            FlushPolicy.parse(bad)


def test_defaults_are_kafkas() -> None:
    d = LogConfig().describe()
    assert d["segment.bytes"] == str(1 << 30)
    assert d["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert d["retention.bytes"] == "-1"
    assert d["max.message.bytes"] == "1048588"
    assert d["cleanup.policy"] == "delete"


def test_from_topic_configs_and_describe_round_trip() -> None:
    base = LogConfig(flush=FlushPolicy.parse("never"))
    cfg = LogConfig.from_topic_configs(
        {
            "retention.ms": "1000",
            "segment.bytes": "4096",
            "cleanup.policy": "delete",
            "retention.bytes": "-1",
            "flush.ms": "300",
            "min.insync.replicas": "1",
        },
        base,
    )
    assert (cfg.retention_ms, cfg.segment_bytes, cfg.flush.interval_ms) == (1000, 4096, 300)
    assert LogConfig.from_topic_configs(cfg.describe()) == cfg
    assert LogConfig.from_topic_configs({}, base) == base
    assert LogConfig.from_topic_configs({"retention.ms": None}, base) == base  # type: ignore[dict-item]
    assert LogConfig.from_topic_configs({"flush.messages": "1"}, base).flush.always
    never = LogConfig.from_topic_configs({"flush.ms": str(2**63 - 1)})
    assert never.flush.never


@pytest.mark.parametrize(
    "configs",
    [
        {"cleanup.policy": "compact"},
        {"cleanup.policy": "compact,delete"},
        {"retention.ms": "soon"},
        {"retention.ms": "-2"},
        {"segment.bytes": "10"},
        {"segment.bytes": str(2**31)},
        {"no.such.config": "1"},
        {"flush.messages": "100"},
        {"compression.type": "gzip"},
    ],
)
def test_rejected_configs(configs: dict[str, str]) -> None:
    with pytest.raises(InvalidConfigError):
        LogConfig.from_topic_configs(configs)
