"""Produce: validate the batches, assign offsets, append to the partition's log.

A transactional batch is appended only for a partition that AddPartitionsToTxn added to its
producer's ongoing transaction, at the producer's current epoch (KIP-890 part 1: a late batch
of a finished or fenced transaction cannot become part of the next one); otherwise it is
refused with INVALID_TXN_STATE, INVALID_PRODUCER_EPOCH or INVALID_PRODUCER_ID_MAPPING.
Control batches (commit/abort markers) are written by the transaction coordinator only.
"""

from __future__ import annotations

import logging
from typing import Any

from strom.broker.handlers.base import Body, Context, api
from strom.broker.handlers.topics import ensure_topic
from strom.broker.log import LogStorageError, RecordTooLargeError
from strom.broker.state import BrokerState, now_ms
from strom.kafka.protocol.errors import ErrorCode
from strom.kafka.protocol.legacy_records import is_message_set, up_convert
from strom.kafka.protocol.records import (
    BatchHeader,
    CorruptRecordError,
    UnsupportedMagicError,
    validate_produce_records,
)

log = logging.getLogger("strom.broker")


def _partition_result(index: int, code: ErrorCode, message: str | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "error_code": int(code),
        "base_offset": -1,
        "log_append_time_ms": -1,
        "log_start_offset": -1,
        "record_errors": [],
        "error_message": message,
    }


def _append(
    state: BrokerState, topic: str, partition: int, records: Any, headers: list[BatchHeader]
) -> dict[str, Any]:
    plog = state.logs.partition(topic, partition)
    first = headers[0]
    if first.producer_id >= 0:
        verdict = state.sequences.check(topic, partition, headers)
        if verdict.error_code != 0:
            return _partition_result(partition, ErrorCode(verdict.error_code), verdict.message)
        if verdict.duplicate_offset is not None:
            result = _partition_result(partition, ErrorCode.NONE)
            result["base_offset"] = verdict.duplicate_offset
            result["log_start_offset"] = plog.log_start_offset
            return result
    try:
        appended = plog.append(records, now_ms(), validated=headers)
    except RecordTooLargeError as exc:
        return _partition_result(partition, ErrorCode.MESSAGE_TOO_LARGE, str(exc))
    except LogStorageError as exc:
        log.error("append to %s-%d failed: %s", topic, partition, exc)
        return _partition_result(partition, ErrorCode.KAFKA_STORAGE_ERROR, str(exc))
    if first.producer_id >= 0:
        state.sequences.record(topic, partition, headers, appended.base_offset)
    result = _partition_result(partition, ErrorCode.NONE)
    result["base_offset"] = appended.base_offset
    result["log_start_offset"] = appended.log_start_offset
    return result


def _produce_partition(
    state: BrokerState, topic: str, partitions: int, part: dict[str, Any], version: int
) -> dict[str, Any]:
    index = part["index"]
    if not 0 <= index < partitions:
        return _partition_result(index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    records = part["records"]
    if records is None or len(records) == 0:
        return _partition_result(index, ErrorCode.INVALID_RECORD, "no records")
    if version < 3 and is_message_set(records):
        # Produce v0-2 carry message format v0/v1; the log holds v2 only (as Kafka 3's does).
        try:
            records = up_convert(records)
        except CorruptRecordError as exc:
            log.warning("rejected corrupt message set for %s-%d: %s", topic, index, exc)
            return _partition_result(index, ErrorCode.CORRUPT_MESSAGE, str(exc))
        except ImportError as exc:  # the codec's optional package is not installed
            return _partition_result(index, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, str(exc))
    try:
        headers = validate_produce_records(records)
    except UnsupportedMagicError as exc:
        return _partition_result(index, ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, str(exc))
    except CorruptRecordError as exc:
        log.warning("rejected corrupt batch for %s-%d: %s", topic, index, exc)
        return _partition_result(index, ErrorCode.CORRUPT_MESSAGE, str(exc))
    if not headers:
        return _partition_result(index, ErrorCode.INVALID_RECORD, "no records")
    # (validate_produce_records has refused control batches: only the coordinator writes them.)
    if headers[0].is_transactional:
        refused = _verify_transactional(state, topic, index, headers)
        if refused is not None:
            return refused
    elif any(h.is_transactional for h in headers):
        return _partition_result(
            index, ErrorCode.INVALID_RECORD, "transactional and other batches in one request"
        )
    return _append(state, topic, index, records, headers)


def _verify_transactional(
    state: BrokerState, topic: str, partition: int, headers: list[BatchHeader]
) -> dict[str, Any] | None:
    """The refusal of transactional ``headers`` (None: they may be appended)."""
    first = headers[0]
    if any(
        not h.is_transactional
        or (h.producer_id, h.producer_epoch) != (first.producer_id, first.producer_epoch)
        for h in headers
    ):
        return _partition_result(
            partition, ErrorCode.INVALID_RECORD, "batches of several producers in one request"
        )
    code = state.transactions.verify_produce(
        first.producer_id, first.producer_epoch, topic, partition
    )
    if code == 0:
        return None
    return _partition_result(
        partition,
        ErrorCode(code),
        f"producer {first.producer_id} epoch {first.producer_epoch} may not write to "
        f"{topic}-{partition} in a transaction now",
    )


@api(0, "Produce", 0, 9)
async def produce(ctx: Context, req: Body) -> Body | None:
    state = ctx.state
    acks = req["acks"]
    responses = []
    appended: list[tuple[str, int]] = []
    for topic in req["topic_data"]:
        name = topic["name"]
        info = ensure_topic(state, name, allow_create=True)
        if isinstance(info, ErrorCode):
            parts = [_partition_result(p["index"], info) for p in topic["partition_data"]]
        elif acks not in (-1, 0, 1):
            parts = [
                _partition_result(p["index"], ErrorCode.INVALID_REQUIRED_ACKS)
                for p in topic["partition_data"]
            ]
        else:
            parts = [
                _produce_partition(state, name, info.partitions, p, ctx.version)
                for p in topic["partition_data"]
            ]
            appended += [(name, p["index"]) for p in parts if p["error_code"] == 0]
        responses.append({"name": name, "partition_responses": parts})
    if appended:
        state.notify_append(appended)
    if acks == 0:
        return None
    return {"responses": responses, "throttle_time_ms": 0}
