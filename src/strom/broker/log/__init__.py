"""Durable partition logs: segment files, sparse indexes, recovery and retention.

The log is files, like Kafka's: one directory per partition holding segment files of record
batches exactly as producers sent them (with broker-assigned offsets), a sparse offset index and
a time index per segment. See :class:`PartitionLog` and :class:`LogManager`.
"""

from strom.broker.log.config import FlushPolicy, LogConfig
from strom.broker.log.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    LogError,
    LogStorageError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TopicExistsError,
    UnknownTopicError,
)
from strom.broker.log.manager import LogManager, TopicInfo, validate_topic_name
from strom.broker.log.partition import AppendResult, PartitionLog, ReadResult
from strom.broker.log.retention import SegmentStats, segments_to_delete

__all__ = [
    "AppendResult",
    "FlushPolicy",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidTopicError",
    "LogConfig",
    "LogError",
    "LogManager",
    "LogStorageError",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "ReadResult",
    "RecordTooLargeError",
    "SegmentStats",
    "TopicExistsError",
    "TopicInfo",
    "UnknownTopicError",
    "segments_to_delete",
    "validate_topic_name",
]
