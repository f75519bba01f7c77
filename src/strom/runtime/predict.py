"""The scoring operator: one model call per micro-batch, versions switched only between batches.

**Loading.** The model is resolved and loaded when the run opens (the plan's validation already
loaded and verified it, and the store caches it, so a worker reads each version once).

**Switching.** Before each batch the operator compares the store's alias token (one ``stat``);
when it changed, it resolves the reference again and, if it names another version, loads that
one and scores the batch with it. So a promotion reaches a running pipeline at the next batch,
and every batch is scored by exactly one version, named on each of its rows.

Once the run takes checkpoints (the first :meth:`PredictOperator.snapshot` or
:meth:`~PredictOperator.restore`), switching happens only at a checkpoint: the snapshot takes
up the new version, and records it as the version of the batches that follow. A recovery from
that checkpoint restores it, so replayed batches are scored by the version that scored them
the first time (exactly-once outputs stay exactly the same), and the version changes exactly at
a checkpoint boundary.

**Failures.** A batch the model raises on (or returns the wrong number of scores for) is sent to
the dead-letter output, one row per input row of
:data:`~strom.connectors.deadletter.DEAD_LETTER_SCHEMA`: the reason names the model version and
the error; topic, partition and offset come from the row's ``_topic``/``_partition``/``_offset``
when it has them, the timestamp from its event time, ``raw`` is the row as JSON. The pipeline
goes on with the next batch. Without a dead-letter sink the rows are logged and counted.
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

from strom.connectors.deadletter import batch_dead_letters, dead_letter_output
from strom.engine.contracts import Metrics, OperatorState, Sink
from strom.engine.scoring import ScoringModel, score_frame
from strom.pipeline.plan import PredictNode
from strom.pipeline.windows import event_time_ms
from strom.runtime.operators import Operator, Runs
from strom.runtime.snapshots import check_definition

__all__ = ["PredictOperator"]

log = logging.getLogger("strom.runtime")

_KIND, _VERSION = "predict", 1


class PredictOperator(Operator):
    """Scores every batch with the model version in use (see the module)."""

    def __init__(self, name: str, node: PredictNode, ts_column: str | None) -> None:
        super().__init__(name)
        self.node = node
        self.ts_column = ts_column
        self.model: ScoringModel | None = None
        self.switches: list[tuple[int, int]] = []  # (from, to) version, in order
        self.calls = 0
        self._token: object = None
        self._pinned = False  # checkpoints are taken: switch only at them
        self._dead = dead_letter_output(node.dead_letter, f"predict {node.model!r}")

    def definition(self) -> dict[str, Any]:
        """What a state of this operator depends on (a checkpoint's fingerprint holds it)."""
        return {"model": self.node.model, "ref": str(self.node.ref), "output": self.node.output}

    def open(self) -> None:
        if self.model is None:
            self._token = self.node.models.changed(self.node.model)
            self._use(self.node.models.resolve(self.node.model, self.node.ref))

    def _use(self, version: int) -> None:
        previous = self.model
        if previous is not None and previous.version == version:
            return
        self.model = self.node.models.load(self.node.model, version)
        if previous is not None:
            self.switches.append((previous.version, version))
            log.info(
                "%s: model %r v%d -> v%d", self.name, self.node.model, previous.version, version
            )

    def _maybe_switch(self) -> None:
        token = self.node.models.changed(self.node.model)
        if token == self._token:
            return
        self._token = token
        try:
            self._use(self.node.models.resolve(self.node.model, self.node.ref))
        except (ValueError, OSError) as exc:  # keep scoring with the version in use
            log.error("%s: not switching models: %s", self.name, exc)

    def on_segments(self, batch: pl.DataFrame, runs: Runs) -> None:
        """One batch, one model call: scoring ignores partitions."""
        self.on_batch(runs[0][0], batch)

    def on_batch(self, partition: int, batch: pl.DataFrame) -> None:
        self.counters.rows_in += batch.height
        if not batch.height:
            return
        if self.model is None:
            self.open()
        if not self._pinned:
            self._maybe_switch()
        model = self.model
        assert model is not None
        self.calls += 1
        feature_version = self.node.feature_version or model.feature_version
        try:
            scored = score_frame(model, batch, self.node.output, feature_version)
        except Exception as exc:  # a model's failure is the batch's, not the pipeline's
            reason = f"model {model.name!r} v{model.version} raised {type(exc).__name__}: {exc}"
            self._dead.write(batch_dead_letters(batch, reason, self._event_time(batch)))
            return
        self.emit(partition, scored)

    def _event_time(self, batch: pl.DataFrame) -> pl.Expr | None:
        ts = self.ts_column
        return None if ts is None else event_time_ms(ts, batch.schema[ts])

    # -- checkpoints ---------------------------------------------------------------------------

    def snapshot(self) -> OperatorState:
        """The checkpoint boundary: take up a promoted version now, and record it as the one
        that scores the batches after this checkpoint."""
        self._pinned = True
        if self.model is None:
            self.open()
        self._maybe_switch()
        assert self.model is not None
        meta = {"definition": self.definition(), "version": self.model.version}
        return OperatorState(_KIND, _VERSION, {}, meta)

    def restore(self, state: OperatorState) -> None:
        state.check(_KIND, _VERSION, self.name)
        check_definition(state, self.definition(), self.name)
        self._pinned = True
        self._token = self.node.models.changed(self.node.model)
        self._use(int(state.meta["version"]))

    def state_size(self) -> int:
        return 0

    # -- the dead-letter output ----------------------------------------------------------------

    def side_sinks(self) -> list[Sink]:
        """The dead-letter output, when there is a sink (checkpoints commit it)."""
        return [self._dead] if self._dead.sink is not None else []

    def close(self) -> None:
        self._dead.close()

    def metrics(self) -> Metrics:
        c = self.counters
        detail = {"model_calls": self.calls, "switches": len(self.switches)}
        if self.model is not None:
            detail["model_version"] = self.model.version
        return Metrics(
            rows_in=c.rows_in,
            rows_out=c.rows_out,
            dead_letters=self._dead.count,
            state_size=0,
            label=f"Predict({self.node.model!r})",
            detail=detail,
        )
