"""The pipeline the exactly-once tests run with ``strom run --checkpoint-dir`` (and kill).

A KafkaSource of ``eos-in`` (3 partitions, read to the end offsets present when it opens,
``group_id`` ``eos-app``) feeds a keyed tumbling window (count and sum per key and 2 s) written
to the Kafka topic ``EOS_NAME-windows`` by an exactly-once :class:`~strom.KafkaSink`
(transactional id ``EOS_NAME.windows``, keyed by ``key``; the run's commit decider) and to the
table ``windows`` of ``EOS_OUT/out.db`` by an exactly-once :class:`~strom.SQLiteSink`, and a
keyed process function (per key a running count and sum, emitted for every element) written as
NDJSON files under ``EOS_OUT/running`` by an exactly-once :class:`~strom.FileSink`. Every key
lives in one input partition, so each key's outputs are determined by the input alone (not by
how partitions interleave).

Crash points (``CKPT_CRASH=<point>:<n>``, see ``ckpt_sink.py``): ``pre_commit`` (the Kafka
sink's records flushed into its transaction, the other sinks not pre-committed, no checkpoint
written), ``store`` (inside the checkpoint's file writes), ``written`` (the checkpoint written,
before the Kafka sink's EndTxn), ``decided`` (the Kafka transaction committed, the database's
and the files' commits not made). ``EOS_STOP_AT=<n>``: the process stops itself (SIGSTOP) at the
``written`` point of the ``n``-th checkpoint, its transaction open: a zombie for a test to
resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import polars as pl
from ckpt_sink import crash_point, install_store_crash

from strom import (
    FileSink,
    KafkaSink,
    KafkaSource,
    Pipeline,
    ProcessContext,
    ProcessFunction,
    SQLiteSink,
    Tumbling,
    agg,
)

INPUT = "eos-in"
PARTITIONS = 3
GROUP = "eos-app"
SCHEMA = {"ts": pl.Int64, "key": pl.String, "v": pl.Int64}
RUNNING = {"key": pl.String, "ts": pl.Int64, "n": pl.Int64, "total": pl.Int64}


class Running(ProcessFunction):
    """Per key: how many elements and their sum so far, emitted with every element."""

    def process_element(self, row: dict[str, Any], ctx: ProcessContext) -> None:
        count, total = ctx.value_state("n"), ctx.value_state("total")
        n, t = (count.value() or 0) + 1, (total.value() or 0) + row["v"]
        count.update(n)
        total.update(t)
        ctx.emit({"key": ctx.key, "ts": row["ts"], "n": n, "total": t})


class KafkaSinkWithCrashes(KafkaSink):
    """The exactly-once KafkaSink with the crash points (after its flush; around its commit,
    the checkpoint's decision), and the ``EOS_STOP_AT`` stop."""

    commits = 0

    def pre_commit(self, checkpoint_id: int) -> None:
        super().pre_commit(checkpoint_id)
        crash_point("pre_commit")

    def commit(self, checkpoint_id: int) -> None:
        crash_point("written")
        self.commits += 1
        if self.commits == int(os.environ.get("EOS_STOP_AT", "0")):
            os.kill(os.getpid(), signal.SIGSTOP)
        super().commit(checkpoint_id)
        crash_point("decided")


def build_pipeline() -> Pipeline:
    if os.environ.get("CKPT_CRASH", "").startswith("store:"):
        install_store_crash()
    bootstrap = os.environ["STROM_BOOTSTRAP"]
    name = os.environ["EOS_NAME"]
    p = Pipeline()
    source = KafkaSource(
        bootstrap,
        INPUT,
        schema=SCHEMA,
        group_id=GROUP,
        bounded=True,
        max_batch_records=int(os.environ.get("EOS_BATCH", "40")),
    )
    events = p.source(source, timestamp="ts", max_out_of_orderness_ms=1_000)
    windows = events.key_by("key").window(Tumbling(2_000)).agg(agg.count(), agg.sum("v"))
    windows.sink(
        KafkaSinkWithCrashes(
            bootstrap,
            f"{name}-windows",
            key="key",
            guarantee="exactly-once",
            transactional_id=f"{name}.windows",
        )
    )
    out = Path(os.environ["EOS_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    windows.sink(SQLiteSink(out / "out.db", "windows", guarantee="exactly-once"))
    running = events.key_by("key").process(Running(), output_schema=RUNNING)
    running.sink(FileSink(out / "running", "ndjson", guarantee="exactly-once"))
    return p
