"""Transactional batches for the log tests, and an oracle that derives a log's transaction state
from its batches alone (independently of strom.broker.log.transactions)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from strom.broker.log import PartitionLog
from strom.kafka.protocol.records import Record, build_batch, decode_batch, iter_batches


def txn_batch(pid: int, values: list[bytes], *, epoch: int = 0, seq: int = 0) -> bytes:
    """A transactional data batch of producer ``pid``."""
    recs = [Record(timestamp=1000 + i, key=b"k", value=v) for i, v in enumerate(values)]
    return build_batch(
        recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=True
    )


def plain_batch(values: list[bytes]) -> bytes:
    return build_batch([Record(timestamp=1000, value=v) for v in values])


@dataclass
class Oracle:
    """What the batches of a log say: ongoing transactions and aborted ones."""

    ongoing: dict[int, int] = field(default_factory=dict)  # pid: first offset
    aborted: list[tuple[int, int, int]] = field(default_factory=list)  # pid, first, marker
    committed_values: list[bytes] = field(default_factory=list)  # read_committed's view
    all_values: list[bytes] = field(default_factory=list)
    end: int = 0

    @property
    def lso(self) -> int:
        return min(self.ongoing.values(), default=self.end)

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        return [(p, f) for p, f, last in self.aborted if last >= start and f < end]


def oracle(log: PartitionLog) -> Oracle:
    out = Oracle(end=log.log_end_offset)
    batches: list[tuple[int, int, bool, bool, bool, list[bytes]]] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 30).read_bytes()
        for h, pos in iter_batches(data):
            records = decode_batch(data, pos)
            if h.is_control:
                assert records[0].key is not None
                commit = struct.unpack(">hh", records[0].key)[1] == 1
                values: list[bytes] = []
            else:
                commit = False
                values = [r.value or b"" for r in records]
            pid, first = h.producer_id, h.base_offset
            if h.is_control and pid in out.ongoing:
                started = out.ongoing.pop(pid)
                if not commit:
                    out.aborted.append((pid, started, first))
            elif h.is_transactional and not h.is_control and pid not in out.ongoing:
                out.ongoing[pid] = first
            batches.append((first, pid, h.is_transactional, h.is_control, commit, values))
            offset = h.next_offset
    # read_committed's view: data of transactions that were not aborted, below the LSO
    aborted_ranges = {(p, f): last for p, f, last in out.aborted}
    for first, pid, transactional, control, _, values in batches:
        out.all_values += values
        if control or first >= out.lso:
            continue
        if transactional and any(
            p == pid and f <= first < last for (p, f), last in aborted_ranges.items()
        ):
            continue
        out.committed_values += values
    return out
