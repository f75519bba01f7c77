"""Snapshots in the streaming runtime: what operators' states share, and a whole executor's.

An :class:`ExecutorSnapshot` is what a checkpoint stores (the exactly-once issue persists it):
every source partition's position, by source name, and every stateful operator's
:class:`~strom.engine.contracts.OperatorState`, by operator id. Operator ids are the executor's
operator names (``"3:WindowAgg"``: plan position and node kind), so a snapshot restores into an
executor of the same pipeline definition, in this process or another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from strom.engine.contracts import Buffer, OperatorState, Position, StateError, pack, unpack

__all__ = ["ExecutorSnapshot", "check_definition", "seq_from_meta", "seq_to_meta"]

_MAGIC = b"STROMSNP"


def seq_to_meta(seq: Mapping[int, int]) -> list[list[int]]:
    """Per-partition row counters (the ``SEQ`` numbering) as JSON."""
    return [[p, n] for p, n in seq.items()]


def seq_from_meta(value: Sequence[Sequence[int]]) -> dict[int, int]:
    return {int(p): int(n) for p, n in value}


def check_definition(state: OperatorState, expected: Mapping[str, Any], owner: str) -> None:
    """Refuse a state whose operator was defined otherwise (keys, window, aggregations, ...):
    its rows would be misread, or silently mean something else."""
    found = state.meta.get("definition")
    if found != expected:
        raise StateError(
            f"{owner}: the state is of an operator defined as {json.dumps(found)}, but this "
            f"one is {json.dumps(expected)}"
        )


@dataclass(frozen=True, eq=False)
class ExecutorSnapshot:
    """Every source partition's position and every stateful operator's state, of one executor
    between two steps. ``positions[source]`` has one position per partition, in partition order.

    ``clock_ms`` is the executor's processing-time clock when the snapshot was taken: the
    states' processing-time values (a partition's last data, processing-time timers) are
    values of that clock, which a restoring executor rebases onto its own (a new process's
    monotonic clock has another origin).
    """

    positions: Mapping[str, Sequence[Position]] = field(default_factory=dict)
    states: Mapping[str, OperatorState] = field(default_factory=dict)
    clock_ms: float = 0.0

    def to_bytes(self) -> bytes:
        """One blob: a JSON header (positions, operator ids), then each state's bytes."""
        header = {
            "positions": {name: list(ps) for name, ps in self.positions.items()},
            "states": list(self.states),
            "clock_ms": self.clock_ms,
        }
        return pack(_MAGIC, header, [s.to_bytes() for s in self.states.values()])

    @classmethod
    def from_bytes(cls, data: Buffer) -> ExecutorSnapshot:
        header, blobs = unpack(_MAGIC, data, "an executor snapshot")
        try:
            ids, positions = header["states"], header["positions"]
            states = {str(i): OperatorState.from_bytes(b) for i, b in zip(ids, blobs, strict=True)}
            clock_ms = float(header.get("clock_ms", 0.0))
            return cls({str(n): list(ps) for n, ps in positions.items()}, states, clock_ms)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, StateError):
                raise
            raise StateError(f"not a readable executor snapshot: {exc}") from exc
