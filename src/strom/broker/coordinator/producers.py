"""Producer ids: unique across restarts, reserved in blocks recorded in one small file.

Guarantees of :class:`ProducerIdManager`:

* A producer id is never handed out twice, across restarts and crashes. Ids are reserved in
  blocks: the end of the current block is made durable (atomic rewrite + fsync) before any id
  from it is used, so a crash can skip at most one block of ids but never reuse one.
* An unreadable state file stops the broker from starting rather than risk reusing ids.

The manager only allocates. An idempotent producer's InitProducerId is one fresh id with epoch
0; a transactional id's producer id and epoch live in the transaction log, the one source of
truth for them (:class:`strom.broker.coordinator.transactions.TransactionCoordinator`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from strom.broker.coordinator import errors, journal

__all__ = ["InitProducerIdResult", "ProducerIdManager"]


class InitProducerIdResult(NamedTuple):
    error_code: int
    producer_id: int = -1
    producer_epoch: int = -1


class ProducerIdManager:
    """Allocates producer ids; ``path`` is the state file (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], *, block_size: int = 1000) -> None:
        self.path = Path(path)
        self._block_size = block_size
        self._reserved_until = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            records, _ = journal.scan(self.path.read_bytes())
            if not records:
                raise ValueError(f"{self.path}: unreadable producer id state")
            self._reserved_until = int(records[-1]["next"])
        self._next_id = self._reserved_until

    def init_idempotent(self) -> InitProducerIdResult:
        """InitProducerId without a transactional id: a fresh id, epoch 0."""
        return InitProducerIdResult(errors.NONE, self.allocate(), 0)

    def allocate(self) -> int:
        """A producer id never handed out before."""
        if self._next_id >= self._reserved_until:
            self._reserved_until = self._next_id + self._block_size
            journal.rewrite(self.path, [{"next": self._reserved_until}])
        pid = self._next_id
        self._next_id += 1
        return pid
