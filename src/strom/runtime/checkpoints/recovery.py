"""Starting a run from its checkpoint directory: which checkpoint, checked, restored.

:func:`recover` runs once, before the first step:

1. The sinks are checked against the guarantee (:func:`check_sinks`).
2. The checkpoint to restore is picked: without a deciding sink, the latest complete one (its
   manifest being written was the decision); with one
   (:class:`~strom.engine.contracts.CommitDecider`), the one it reports committed, which must
   still be in the directory. Checkpoints above it were never decided and are deleted.
3. Its fingerprint must match the run's (:mod:`.fingerprint`), every state file its sha256.
4. ``executor.restore(snapshot, elapsed_ms=wall time since the checkpoint)``, then every
   sink's ``recover(c)`` (``recover(None)`` when there was nothing to restore).

A damaged latest checkpoint is an error under exactly-once (restoring an older one would
repeat outputs the damaged one committed); under at-least-once the newest intact one is used,
with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strom.engine.contracts import CommitDecider, Guarantee, SharesDecision, Sink
from strom.runtime.checkpoints.fingerprint import differences, fingerprint
from strom.runtime.checkpoints.store import CheckpointError, CheckpointStore, Manifest, now_ms
from strom.runtime.snapshots import ExecutorSnapshot

if TYPE_CHECKING:
    from strom.runtime.executor import StreamingExecutor

__all__ = ["Recovered", "check_sinks", "recover", "sink_id"]

log = logging.getLogger("strom.checkpoints")


@dataclass(frozen=True)
class Recovered:
    """What :func:`recover` did: the checkpoint restored (None: started from the sources'
    beginnings) and the id the next checkpoint takes."""

    checkpoint: Manifest | None
    next_id: int


def sink_id(index: int, sink: Sink) -> str:
    """How a checkpoint names a sink: its index among the run's sinks and its type."""
    return f"{index}:{type(sink).__qualname__}"


def check_sinks(sinks: Sequence[Sink], guarantee: Guarantee) -> Sink | None:
    """The run's deciding sink (None if none); :class:`CheckpointError` if a sink cannot give
    ``guarantee`` or more than one sink would decide (two decisions are not one atomic one;
    sinks sharing one decision, :class:`~strom.engine.contracts.SharesDecision`, are one: the
    first of them is returned, and commits it)."""
    if guarantee not in ("exactly-once", "at-least-once"):
        raise CheckpointError(
            f"guarantee must be 'exactly-once' or 'at-least-once', not {guarantee!r}"
        )
    if guarantee == "exactly-once":
        weak = [sink_id(i, s) for i, s in enumerate(sinks) if s.guarantee != "exactly-once"]
        if weak:
            raise CheckpointError(
                f"exactly-once needs two-phase sinks, and these are at-least-once: "
                f"{', '.join(weak)}; run with --guarantee at-least-once (guarantee="
                f"'at-least-once') to accept their duplicates after a failure"
            )
    deciders = [
        (i, s)
        for i, s in enumerate(sinks)
        if isinstance(s, CommitDecider) and s.guarantee == "exactly-once"
    ]
    decisions = {id(s.decision() if isinstance(s, SharesDecision) else s) for _, s in deciders}
    if len(decisions) > 1:
        names = ", ".join(sink_id(i, s) for i, s in deciders)
        raise CheckpointError(f"at most one sink can decide a checkpoint's commit, not {names}")
    return deciders[0][1] if deciders else None


def recover(executor: StreamingExecutor, store: CheckpointStore, guarantee: Guarantee) -> Recovered:
    """Restore ``executor`` (not stepped yet) from ``store`` (locked) and recover its sinks."""
    sinks = executor.sinks()
    decider = check_sinks(sinks, guarantee)
    executor.open()  # the plan's sinks open here: a decider answers once open
    highest = store.highest_id()
    picked = _pick(store, decider, guarantee)
    if picked is None:
        if highest:
            log.warning("discarding checkpoints %s: none was committed", store.discard(0))
        for sink in sinks:
            sink.recover(None)
        return Recovered(None, highest + 1)
    manifest, snapshot = picked
    changed = differences(manifest.fingerprint, fingerprint(executor))
    if changed:
        raise CheckpointError(
            f"checkpoint {manifest.id} in {store.path} is of another pipeline: "
            f"{'; '.join(changed)}. Run the pipeline it was taken of, or give this one "
            "another checkpoint directory (it then starts from its sources' beginnings)"
        )
    discarded = store.discard(manifest.id)
    if discarded:
        log.warning("discarding checkpoints %s: never committed", discarded)
    executor.restore(snapshot, elapsed_ms=max(now_ms() - manifest.wall_time_ms, 0))
    for sink in sinks:
        sink.recover(manifest.id)
    return Recovered(manifest, max(highest, manifest.id) + 1)


def _pick(
    store: CheckpointStore, decider: Sink | None, guarantee: Guarantee
) -> tuple[Manifest, ExecutorSnapshot] | None:
    """The checkpoint to restore (see the module docstring) and its snapshot (verified)."""
    if decider is not None:
        assert isinstance(decider, CommitDecider)
        committed = decider.committed_checkpoint()
        if committed is None:
            return None
        manifest = store.get(committed)  # CheckpointError if it is gone: nothing else is right
        return manifest, store.load(manifest)
    found = store.checkpoints()
    for manifest in reversed(found):
        try:
            return manifest, store.load(manifest)
        except CheckpointError as exc:
            if guarantee == "exactly-once":
                raise CheckpointError(
                    f"{exc}. It is the latest checkpoint: restoring an earlier one would "
                    "repeat what it committed. Move it away to restore the one before "
                    "(at-least-once)"
                ) from exc
            log.warning("%s; trying the checkpoint before it (at-least-once)", exc)
    return None
