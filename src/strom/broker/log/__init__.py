"""Durable partition logs: segment files, sparse indexes, recovery and retention.

The log is files, like Kafka's: one directory per partition holding segment files of record
batches exactly as producers sent them (with broker-assigned offsets), a sparse offset index and
a time index per segment, and the transaction state of each partition (producer-state snapshots,
an aborted-transaction index per segment). See :class:`PartitionLog` and :class:`LogManager`.
"""

from strom.broker.log.config import FlushPolicy, LogConfig
from strom.broker.log.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidProducerEpochError,
    InvalidTopicError,
    LogError,
    LogStorageError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TopicExistsError,
    TransactionCoordinatorFencedError,
    UnknownTopicError,
)
from strom.broker.log.manager import LogManager, TopicInfo, validate_topic_name
from strom.broker.log.partition import AppendResult, PartitionLog, ReadResult
from strom.broker.log.retention import SegmentStats, segments_to_delete
from strom.broker.log.transactions import ProducerState

__all__ = [
    "AppendResult",
    "FlushPolicy",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidTopicError",
    "LogConfig",
    "LogError",
    "LogManager",
    "LogStorageError",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "ProducerState",
    "ReadResult",
    "RecordTooLargeError",
    "SegmentStats",
    "TopicExistsError",
    "TopicInfo",
    "TransactionCoordinatorFencedError",
    "UnknownTopicError",
    "segments_to_delete",
    "validate_topic_name",
]
