"""LogManager: the topic registry, partition directories, crash-safe create and delete."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from strom.broker.log import (
    FlushPolicy,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    LogConfig,
    LogError,
    LogManager,
    TopicExistsError,
    UnknownTopicError,
)

MakeBatch = Callable[..., bytes]


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "bad/name", "sp ace", "ü"])
def test_invalid_topic_names(tmp_path: Path, name: str) -> None:
    with LogManager(tmp_path) as m, pytest.raises(InvalidTopicError):
        m.create_topic(name, 1)


def test_create_reopen_and_read_back(tmp_path: Path, make_batch: MakeBatch) -> None:
    with LogManager(tmp_path) as m:
        info = m.create_topic("orders.v1", 3, {"retention.ms": "1000"})
        assert (info.name, info.partitions, len(info.topic_id)) == ("orders.v1", 3, 16)
        assert m.topics() == {"orders.v1": info}
        assert m.topic_config("orders.v1").retention_ms == 1000
        assert m.topic_config("orders.v1").describe()["retention.ms"] == "1000"
        for p in range(3):
            m.partition("orders.v1", p).append(make_batch(p + 1), now_ms=1)
        m.create_topic("a_b", 1)
        with pytest.raises(TopicExistsError):
            m.create_topic("orders.v1", 1)
        with pytest.raises(InvalidTopicError, match="collides"):
            m.create_topic("a.b", 1)
        with pytest.raises(InvalidPartitionsError):
            m.create_topic("zero", 0)
        with pytest.raises(InvalidConfigError):
            m.create_topic("compacted", 1, {"cleanup.policy": "compact"})
        assert set(m.topics()) == {"orders.v1", "a_b"}
        assert sorted(m.topics().values())[0].name == "a_b"
    assert not (tmp_path / "compacted-0").exists()
    with LogManager(tmp_path) as m:
        assert m.topics()["orders.v1"] == info
        assert [m.partition("orders.v1", p).log_end_offset for p in range(3)] == [1, 2, 3]
        with pytest.raises(UnknownTopicError):
            m.partition("orders.v1", 3)
        with pytest.raises(UnknownTopicError):
            m.partition("nope", 0)


def test_add_partitions_and_alter_configs(tmp_path: Path) -> None:
    with LogManager(tmp_path) as m:
        m.create_topic("t", 2)
        with pytest.raises(InvalidPartitionsError):
            m.add_partitions("t", 2)
        grown = m.add_partitions("t", 5)
        assert grown.partitions == 5 and m.partition("t", 4).log_end_offset == 0
        altered = m.alter_topic_configs("t", {"retention.bytes": "1234"})
        assert altered.configs == {"retention.bytes": "1234"}
        assert m.partition("t", 0).config.retention_bytes == 1234
        with pytest.raises(UnknownTopicError):
            m.add_partitions("nope", 3)
    with LogManager(tmp_path) as m:
        assert m.topics()["t"].partitions == 5
        assert m.partition("t", 3).config.retention_bytes == 1234


def test_delete_topic(tmp_path: Path, make_batch: MakeBatch) -> None:
    with LogManager(tmp_path) as m:
        m.create_topic("t", 2)
        m.partition("t", 0).append(make_batch(3), now_ms=1)
        region = m.partition("t", 0).read(0, 1 << 20)
        data = region.read_bytes()
        m.delete_topic("t")
        assert m.topics() == {}
        assert not list(tmp_path.glob("t-*"))
        assert region.read_bytes() == data  # an in-flight fetch region stays readable
        with pytest.raises(UnknownTopicError):
            m.delete_topic("t")
        recreated = m.create_topic("t", 1)
        assert m.partition("t", 0).log_end_offset == 0  # no data comes back
        assert recreated.topic_id != b""
    with LogManager(tmp_path) as m:
        assert list(m.topics()) == ["t"]


def test_interrupted_delete_is_finished_on_open(tmp_path: Path, make_batch: MakeBatch) -> None:
    with LogManager(tmp_path) as m:
        m.create_topic("keep", 1)
        m.create_topic("gone", 2)
        m.partition("gone", 0).append(make_batch(1), now_ms=1)
    # Crash after the registry was written without "gone", before its directories went away;
    # and a crash in the middle of removing a *.deleted directory.
    registry = json.loads((tmp_path / "topics.json").read_text())
    registry["topics"] = [t for t in registry["topics"] if t["name"] != "gone"]
    (tmp_path / "topics.json").write_text(json.dumps(registry))
    shutil.copytree(tmp_path / "keep-0", tmp_path / "keep-0.abc.deleted")
    (tmp_path / "unrelated").mkdir()  # no partition.metadata: never touched
    with LogManager(tmp_path) as m:
        assert list(m.topics()) == ["keep"]
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == [".lock", "keep-0", "topics.json", "unrelated"]
        m.create_topic("gone", 1)
        assert m.partition("gone", 0).log_end_offset == 0


def test_one_broker_per_directory(tmp_path: Path) -> None:
    with LogManager(tmp_path), pytest.raises(LogError, match="in use"):
        LogManager(tmp_path)
    LogManager(tmp_path).close()


def test_flush_dirty_and_retention(tmp_path: Path, make_batch: MakeBatch) -> None:
    config = LogConfig(flush=FlushPolicy.parse("100"), segment_bytes=500, retention_bytes=0)
    with LogManager(tmp_path, config) as m:
        m.create_topic("a", 2)
        m.create_topic("never", 1, {"flush.ms": str(2**63 - 1)})
        for i in range(10):
            m.partition("a", 0).append(make_batch(2, tag=i), now_ms=1_000)
            m.partition("never", 0).append(make_batch(2, tag=i), now_ms=1_000)
        assert m.flush_dirty(now_ms=1_050) == 0
        assert m.flush_dirty(now_ms=1_100) == 1  # only the dirty interval-policy partition
        assert not m.partition("a", 0).is_dirty and m.partition("never", 0).is_dirty
        assert m.flush_dirty() == 0
        deleted = m.apply_retention(now_ms=0)
        assert deleted > 0
        assert m.partition("a", 0).log_start_offset > 0
        assert len(m.partition("a", 0).segment_base_offsets) == 1
