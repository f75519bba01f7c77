"""The latency benchmark's pipeline for ``strom run``: Kafka -> filter -> Kafka, stateless.

Reads ``{"seq": n, "sent_us": t}`` events from ``$LATENCY_INPUT`` and writes those whose
``seq`` is not a multiple of 10 (nine in ten) to ``$LATENCY_OUTPUT``, as the same JSON object,
with the source's and the sink's defaults (at-least-once). With ``$LATENCY_TRANSACTIONAL_ID``
set the sink is exactly-once, with that transactional id (``strom bench eos`` runs it with
``--checkpoint-dir``: records become visible to read_committed consumers at each checkpoint).
"""

import os

import polars as pl

from strom import KafkaSink, KafkaSource, Pipeline

BOOTSTRAP = os.environ["STROM_BOOTSTRAP"]
EVENT = {"seq": pl.Int64(), "sent_us": pl.Int64()}
TRANSACTIONAL_ID = os.environ.get("LATENCY_TRANSACTIONAL_ID")

if TRANSACTIONAL_ID:
    sink = KafkaSink(
        BOOTSTRAP,
        os.environ["LATENCY_OUTPUT"],
        guarantee="exactly-once",
        transactional_id=TRANSACTIONAL_ID,
    )
else:
    sink = KafkaSink(BOOTSTRAP, os.environ["LATENCY_OUTPUT"])

pipeline = Pipeline()
(
    pipeline.source(KafkaSource(BOOTSTRAP, os.environ["LATENCY_INPUT"], schema=EVENT))
    .filter(pl.col("seq") % 10 != 0)
    .select("seq", "sent_us")
    .sink(sink)
)
