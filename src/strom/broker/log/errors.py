"""Errors of the log layer. Each maps to one Kafka error code (noted per class) in the handlers.

Invalid record data is reported by :mod:`strom.kafka.protocol.records` itself
(``CorruptRecordError``, ``UnsupportedMagicError``); the log re-raises those unchanged.
"""

from __future__ import annotations

__all__ = [
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidTopicError",
    "LogError",
    "LogStorageError",
    "OffsetOutOfRangeError",
    "RecordTooLargeError",
    "TopicExistsError",
    "TransactionCoordinatorFencedError",
    "UnknownTopicError",
]


class LogError(Exception):
    """Base of every log error."""


class LogStorageError(LogError):
    """A file operation failed (disk full, I/O error); ``__cause__`` is the OSError.

    KAFKA_STORAGE_ERROR. The log holds the same batches and offsets as before the failed call
    (an append may have rolled to a new, empty segment first).
    """


class RecordTooLargeError(LogError):
    """A batch is larger than ``max.message.bytes``. MESSAGE_TOO_LARGE."""


class OffsetOutOfRangeError(LogError):
    """A read below the log start offset or past the log end offset. OFFSET_OUT_OF_RANGE."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is outside the log's range [{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class InvalidTopicError(LogError):
    """A topic name Kafka would not accept. INVALID_TOPIC_EXCEPTION."""


class TopicExistsError(LogError):
    """The topic already exists. TOPIC_ALREADY_EXISTS."""


class UnknownTopicError(LogError):
    """No such topic or partition. UNKNOWN_TOPIC_OR_PARTITION."""


class InvalidPartitionsError(LogError):
    """A partition count that is not positive, or not an increase. INVALID_PARTITIONS."""


class InvalidConfigError(LogError):
    """An unknown, unsupported or out-of-range topic config. INVALID_CONFIG."""


class InvalidProducerEpochError(LogError):
    """A transaction marker from a producer epoch older than the latest this partition has
    seen for the producer (a fenced zombie's transaction). INVALID_PRODUCER_EPOCH."""


class TransactionCoordinatorFencedError(LogError):
    """A transaction marker from an older coordinator epoch than the partition's last marker
    for that producer. TRANSACTION_COORDINATOR_FENCED."""
