"""Producer ids for InitProducerId: unique across restarts, persisted in one small file.

Guarantees of :class:`ProducerIdManager`:

* A producer id is never handed out twice, across restarts and crashes. Ids are reserved in
  blocks: the end of the current block is made durable (atomic rewrite + fsync) before any id
  from it is used, so a crash can skip at most one block of ids but never reuse one.
* An idempotent (non-transactional) producer gets a fresh id with epoch 0 on every call.
* A transactional id keeps its producer id; each InitProducerId bumps its epoch (fencing older
  instances), and a fresh id with epoch 0 replaces it when the epoch is exhausted. The mapping
  is durable before the answer is returned.
* An unreadable state file stops the broker from starting rather than risk reusing ids.

Transactions themselves (AddPartitionsToTxn, EndTxn, markers) are future work: the manager only
assigns ids and epochs and never has a transaction in progress.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

from strom.broker.coordinator import errors, journal

__all__ = ["InitProducerIdResult", "ProducerIdManager"]

log = logging.getLogger("strom.broker.producers")

# Kafka treats an epoch of Short.MAX_VALUE - 1 as exhausted.
_MAX_EPOCH = 32_766


class InitProducerIdResult(NamedTuple):
    error_code: int
    producer_id: int = -1
    producer_epoch: int = -1


class _Txn(NamedTuple):
    producer_id: int
    epoch: int
    prev_producer_id: int
    prev_epoch: int


class ProducerIdManager:
    """Allocates producer ids; ``path`` is the state file (created on first use)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        block_size: int = 1000,
        max_transaction_timeout_ms: int = 900_000,
    ) -> None:
        self.path = Path(path)
        self._block_size = block_size
        self._max_txn_timeout_ms = max_transaction_timeout_ms
        self._txns: dict[str, _Txn] = {}
        self._reserved_until = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            records, _ = journal.scan(self.path.read_bytes())
            if not records:
                raise ValueError(f"{self.path}: unreadable producer id state")
            state = records[-1]
            self._reserved_until = int(state["next"])
            self._txns = {tid: _Txn(*v) for tid, v in state["txn"].items()}
        self._next_id = self._reserved_until

    def init_producer_id(
        self,
        transactional_id: str | None,
        producer_id: int = -1,
        producer_epoch: int = -1,
        *,
        transaction_timeout_ms: int = 60_000,
    ) -> InitProducerIdResult:
        """Answer InitProducerId. ``producer_id``/``producer_epoch`` are the values a v3+ client
        sends to bump its own epoch (KIP-360); -1 when absent."""
        if transactional_id is None:
            return InitProducerIdResult(errors.NONE, self._allocate(), 0)
        if not transactional_id:
            return InitProducerIdResult(errors.INVALID_REQUEST)
        if not 0 < transaction_timeout_ms <= self._max_txn_timeout_ms:
            return InitProducerIdResult(errors.INVALID_TRANSACTION_TIMEOUT)
        current = self._txns.get(transactional_id)
        if current is None:
            new = _Txn(self._allocate(), 0, -1, -1)
        else:
            if producer_id >= 0:
                expected = (producer_id, producer_epoch)
                if expected == (current.prev_producer_id, current.prev_epoch):
                    # A retry of the bump that produced ``current``: answer it again.
                    return InitProducerIdResult(errors.NONE, current.producer_id, current.epoch)
                if expected != (current.producer_id, current.epoch):
                    return InitProducerIdResult(errors.PRODUCER_FENCED)
            if current.epoch >= _MAX_EPOCH:
                new = _Txn(self._allocate(), 0, current.producer_id, current.epoch)
            else:
                new = _Txn(
                    current.producer_id, current.epoch + 1, current.producer_id, current.epoch
                )
        self._txns[transactional_id] = new
        self._persist()
        return InitProducerIdResult(errors.NONE, new.producer_id, new.epoch)

    def _allocate(self) -> int:
        if self._next_id >= self._reserved_until:
            self._reserved_until = self._next_id + self._block_size
            self._persist()
        pid = self._next_id
        self._next_id += 1
        return pid

    def _persist(self) -> None:
        state: dict[str, Any] = {
            "next": self._reserved_until,
            "txn": {tid: list(t) for tid, t in self._txns.items()},
        }
        journal.rewrite(self.path, [state])
