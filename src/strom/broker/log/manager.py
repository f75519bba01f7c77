"""All partition logs of a broker and the registry of their topics.

On-disk layout of ``data_dir``: ``topics.json`` (the registry, replaced atomically), ``.lock``
(held with flock while open, so two brokers never share a directory) and one directory per
partition, ``<topic>-<partition>/``, holding a ``partition.metadata`` file with the topic id.

Crash-safety invariants: the registry is the truth. A topic is created by making its partition
directories first and then writing the registry; it is deleted by writing the registry first,
then renaming its directories to ``*.deleted`` and removing them. So after a crash at any point,
opening finds either the old or the new registry, and cleans up what it does not name:
``*.deleted`` directories, and partition directories whose metadata names an unregistered topic id.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from strom._fs import fsync_path
from strom.broker.log.config import LogConfig
from strom.broker.log.errors import (
    InvalidPartitionsError,
    InvalidTopicError,
    LogError,
    LogStorageError,
    TopicExistsError,
    UnknownTopicError,
)
from strom.broker.log.fileio import DeferredCloser, atomic_write
from strom.broker.log.partition import AppendResult, PartitionLog

__all__ = ["LogManager", "TopicInfo", "validate_topic_name"]

log = logging.getLogger("strom.broker.log")

REGISTRY: Final = "topics.json"
METADATA: Final = "partition.metadata"
_TOPIC_CHARS: Final = re.compile(r"^[a-zA-Z0-9._-]+$")
_MAX_TOPIC_LENGTH: Final = 249


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A registered topic: ``configs`` holds only its overrides of the broker defaults.

    Instances sort by name.
    """

    name: str
    topic_id: bytes  # 16 bytes (uuid4)
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __lt__(self, other: TopicInfo) -> bool:
        return self.name < other.name


def validate_topic_name(name: str) -> None:
    """Kafka's rule: 1-249 characters of ``[a-zA-Z0-9._-]``, neither ``.`` nor ``..``."""
    if not name or name in (".", ".."):
        raise InvalidTopicError(f"invalid topic name {name!r}")
    if len(name) > _MAX_TOPIC_LENGTH:
        raise InvalidTopicError(f"topic name is longer than {_MAX_TOPIC_LENGTH} characters")
    if not _TOPIC_CHARS.match(name):
        raise InvalidTopicError(f"topic name {name!r} may only contain a-z A-Z 0-9 . _ -")


class LogManager:
    """Opens, creates and deletes partition logs. Not thread-safe (one event loop).

    Each callable in ``on_append`` is called with ``(topic, partition, result)`` after every
    append to any partition (data or transaction marker), e.g. to wake long-polling fetches.
    """

    def __init__(self, data_dir: Path | str, default_config: LogConfig | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.default_config = default_config if default_config is not None else LogConfig()
        self._closer = DeferredCloser()
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self.on_append: list[Callable[[str, int, AppendResult], None]] = []
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LogStorageError(f"cannot open data directory {self.data_dir}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise LogError(f"{self.data_dir} is in use by another broker") from exc
        try:
            self._topics = self._load_registry()
            try:
                self._clean_up()
            except OSError as exc:
                raise LogStorageError(f"cannot clean up {self.data_dir}: {exc}") from exc
            for info in self._topics.values():
                self._open_partitions(info, range(info.partitions))
        except BaseException:
            self.close()
            raise

    # -- registry --------------------------------------------------------------------------

    def _load_registry(self) -> dict[str, TopicInfo]:
        path = self.data_dir / REGISTRY
        try:
            raw: Any = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LogStorageError(f"cannot read {path}: {exc}") from exc
        topics = {}
        try:
            for t in raw["topics"]:
                info = TopicInfo(t["name"], bytes.fromhex(t["id"]), t["partitions"], t["configs"])
                topics[info.name] = info
        except (KeyError, TypeError, ValueError) as exc:
            raise LogStorageError(f"malformed topic registry {path}: {exc!r}") from exc
        return topics

    def _save_registry(self, topics: dict[str, TopicInfo]) -> None:
        doc = {
            "version": 1,
            "topics": [
                {
                    "name": t.name,
                    "id": t.topic_id.hex(),
                    "partitions": t.partitions,
                    "configs": dict(t.configs),
                }
                for t in sorted(topics.values())
            ],
        }
        try:
            atomic_write(self.data_dir / REGISTRY, json.dumps(doc, indent=1).encode())
        except OSError as exc:
            raise LogStorageError(f"cannot write the topic registry: {exc}") from exc
        self._topics = topics

    def _clean_up(self) -> None:
        """Finish interrupted deletions; drop directories of topics the registry does not name."""
        known = {info.topic_id.hex() for info in self._topics.values()}
        for path in self.data_dir.iterdir():
            if not path.is_dir():
                continue
            if path.name.endswith(".deleted"):
                shutil.rmtree(path, ignore_errors=True)
                continue
            topic_id = _read_topic_id(path)
            if topic_id is not None and topic_id not in known:
                log.warning("removing %s: its topic is not registered (interrupted delete)", path)
                self._discard(path, topic_id)

    def _discard(self, path: Path, tag: str) -> None:
        gone = path.with_name(f"{path.name}.{tag}.deleted")
        os.replace(path, gone)
        fsync_path(self.data_dir)
        shutil.rmtree(gone, ignore_errors=True)

    # -- topics ----------------------------------------------------------------------------

    def topics(self) -> dict[str, TopicInfo]:
        return dict(self._topics)

    def topic_config(self, name: str) -> LogConfig:
        """The effective config of a topic: broker defaults with its overrides."""
        return LogConfig.from_topic_configs(self._info(name).configs, self.default_config)

    def validate_topic(
        self, name: str, partitions: int, configs: Mapping[str, str | None] | None = None
    ) -> LogConfig:
        """Check a topic could be created (nothing is changed); return its effective config."""
        validate_topic_name(name)
        if name in self._topics:
            raise TopicExistsError(f"topic {name!r} already exists")
        folded = name.replace(".", "_")
        for other in self._topics:
            if other.replace(".", "_") == folded:
                raise InvalidTopicError(f"topic {name!r} collides with existing topic {other!r}")
        if partitions < 1:
            raise InvalidPartitionsError(f"number of partitions must be positive: {partitions}")
        return LogConfig.from_topic_configs(configs or {}, self.default_config)

    def create_topic(
        self, name: str, partitions: int, configs: Mapping[str, str | None] | None = None
    ) -> TopicInfo:
        overrides = _overrides(configs)
        self.validate_topic(name, partitions, overrides)
        info = TopicInfo(name, uuid.uuid4().bytes, partitions, overrides)
        try:
            self._open_partitions(info, range(partitions), create=True)
            self._save_registry({**self._topics, name: info})
        except BaseException:
            self._drop_partitions(info, range(partitions))
            raise
        return info

    def add_partitions(self, name: str, new_total: int) -> TopicInfo:
        info = self._info(name)
        if new_total <= info.partitions:
            raise InvalidPartitionsError(
                f"topic {name!r} has {info.partitions} partitions; {new_total} adds none"
            )
        grown = TopicInfo(name, info.topic_id, new_total, info.configs)
        added = range(info.partitions, new_total)
        try:
            self._open_partitions(grown, added, create=True)
            self._save_registry({**self._topics, name: grown})
        except BaseException:
            self._drop_partitions(grown, added)
            raise
        return grown

    def alter_topic_configs(self, name: str, configs: Mapping[str, str | None]) -> TopicInfo:
        """Replace the topic's overrides with ``configs`` (validated first)."""
        info = self._info(name)
        overrides = _overrides(configs)
        effective = LogConfig.from_topic_configs(overrides, self.default_config)
        altered = TopicInfo(name, info.topic_id, info.partitions, overrides)
        self._save_registry({**self._topics, name: altered})
        for p in range(info.partitions):
            self._logs[(name, p)].config = effective
        return altered

    def delete_topic(self, name: str) -> None:
        """Unregister the topic, then remove its data (read regions stay valid for a while)."""
        info = self._info(name)
        self._save_registry({k: v for k, v in self._topics.items() if k != name})
        self._drop_partitions(info, range(info.partitions))

    def partition(self, topic: str, partition: int) -> PartitionLog:
        try:
            return self._logs[(topic, partition)]
        except KeyError:
            raise UnknownTopicError(f"unknown partition {topic}-{partition}") from None

    def partitions(self) -> Iterator[tuple[str, int, PartitionLog]]:
        for (topic, p), plog in list(self._logs.items()):
            yield topic, p, plog

    def _info(self, name: str) -> TopicInfo:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicError(f"unknown topic {name!r}") from None

    def _open_partitions(self, info: TopicInfo, which: range, *, create: bool = False) -> None:
        config = LogConfig.from_topic_configs(info.configs, self.default_config)
        for p in which:
            path = self.data_dir / f"{info.name}-{p}"
            try:
                if create and path.exists():
                    self._discard(path, uuid.uuid4().hex)  # leftovers of an interrupted delete
                path.mkdir(parents=True, exist_ok=True)
                if _read_topic_id(path) is None:
                    atomic_write(path / METADATA, f"topic_id={info.topic_id.hex()}\n".encode())
            except OSError as exc:
                raise LogStorageError(f"cannot create {path}: {exc}") from exc
            plog = PartitionLog(path, config, closer=self._closer)
            plog.on_append.append(self._appended(info.name, p))
            self._logs[(info.name, p)] = plog

    def _appended(self, topic: str, partition: int) -> Callable[[AppendResult], None]:
        def appended(result: AppendResult) -> None:
            for callback in self.on_append:
                callback(topic, partition, result)

        return appended

    def _drop_partitions(self, info: TopicInfo, which: range) -> None:
        for p in which:
            plog = self._logs.pop((info.name, p), None)
            if plog is not None:
                plog.close(deleting=True)
            path = self.data_dir / f"{info.name}-{p}"
            if path.exists():
                try:
                    self._discard(path, info.topic_id.hex())
                except OSError as exc:
                    log.warning("cannot remove %s (removed on next start): %s", path, exc)

    # -- maintenance -----------------------------------------------------------------------

    def flush_dirty(self, now_ms: int | None = None) -> int:
        """Flush the partitions whose interval flush policy has unflushed data (only those due
        at ``now_ms`` when given). Returns how many were flushed; raises the first failure
        after trying them all."""
        flushed, first_error = 0, None
        for _, _, plog in self.partitions():
            if plog.config.flush.interval_ms is None or not plog.is_dirty:
                continue
            if now_ms is not None and not plog.flush_due(now_ms):
                continue
            try:
                plog.flush(now_ms)
                flushed += 1
            except LogStorageError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return flushed

    def apply_retention(self, now_ms: int) -> int:
        """Apply retention to every partition; return the number of segments deleted."""
        deleted, first_error = 0, None
        for _, _, plog in self.partitions():
            try:
                deleted += plog.apply_retention(now_ms)
            except LogStorageError as exc:
                first_error = first_error or exc
        self._closer.reap()
        if first_error is not None:
            raise first_error
        return deleted

    def close(self) -> None:
        """Close every partition cleanly and release the data directory. Idempotent."""
        first_error: LogStorageError | None = None
        for key, plog in list(self._logs.items()):
            try:
                plog.close()
            except LogStorageError as exc:
                first_error = first_error or exc
            del self._logs[key]
        self._closer.close_all()
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1
        if first_error is not None:
            raise first_error

    def __enter__(self) -> LogManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _overrides(configs: Mapping[str, str | None] | None) -> dict[str, str]:
    """Config overrides to store: a ``None`` value means "the default", so it is dropped."""
    return {k: v for k, v in (configs or {}).items() if v is not None}


def _read_topic_id(path: Path) -> str | None:
    try:
        text = (path / METADATA).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "topic_id":
            return value.strip()
    return None
