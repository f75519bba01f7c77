"""The Nexmark queries as strom pipelines reading the ``nexmark-*`` topics (bounded runs).

Every source reads JSON with event time ``dateTime`` and a watermark 4 s behind it, as Flink's
Nexmark suite does. Output columns (shared with the peers; keep them exactly):

====  =========================================================================================
q0    every bid column (pass-through)
q1    auction, bidder, price (0.908 * price, Float64), dateTime, extra
q2    auction, price of bids with ``auction % 123 == 0``
q3    name, city, state, id: auctions of category 10 whose seller lives in OR, ID or CA
q4    category, avg_final: per category, the mean winning bid (highest bid between the auction's
      dateTime and expires, inclusive) over the auctions that got one
q5    auction, num, window_start, window_end: per 10 s window sliding by 2 s, the auctions with
      the most bids (ties kept)
q7    auction, price, bidder, dateTime, extra, window_end: per 10 s tumbling window, the bids
      at the window's highest price
q8    id, name, window_start: persons who opened an auction in the 10 s tumbling window in
      which they registered
====  =========================================================================================

q3, q4, q7 and q8 use ``Stream.interval_join``; q4 and q8 then deduplicate with windows, and q5
and q7 find each window's maximum with a second window joined back to the first's rows, so
every query runs on vectorized operators (no per-record Python).
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from benchmarks.nexmark.generator import AUCTION_SCHEMA, BID_SCHEMA, PERSON_SCHEMA
from benchmarks.nexmark.load import TOPICS
from strom.connectors import KafkaSource
from strom.pipeline import (
    Hopping,
    Pipeline,
    Session,
    Sink,
    Stream,
    Tumbling,
    agg,
)

__all__ = ["INPUTS", "OUTPUT_COLUMNS", "QUERIES", "build", "unavailable"]

OUT_OF_ORDERNESS_MS = 4_000
WINDOW_MS = 10_000
SLIDE_MS = 2_000
# A window longer than any run: it closes only when the input ends (the watermark reaches +inf).
WHOLE_RUN = Tumbling(1 << 50)

QUERIES = ("q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8")
INPUTS: dict[str, tuple[str, ...]] = {
    "q0": ("bid",),
    "q1": ("bid",),
    "q2": ("bid",),
    "q3": ("person", "auction"),
    "q4": ("auction", "bid"),
    "q5": ("bid",),
    "q7": ("bid",),
    "q8": ("person", "auction"),
}
OUTPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "q0": tuple(BID_SCHEMA),
    "q1": ("auction", "bidder", "price", "dateTime", "extra"),
    "q2": ("auction", "price"),
    "q3": ("name", "city", "state", "id"),
    "q4": ("category", "avg_final"),
    "q5": ("auction", "num", "window_start", "window_end"),
    "q7": ("auction", "price", "bidder", "dateTime", "extra", "window_end"),
    "q8": ("id", "name", "window_start"),
}
SCHEMAS = {"person": PERSON_SCHEMA, "auction": AUCTION_SCHEMA, "bid": BID_SCHEMA}


def unavailable(query: str) -> str | None:
    """Why ``query`` cannot run on this engine, or ``None`` when it can."""
    if query not in QUERIES:
        return f"unknown query {query!r}"
    return None


class Inputs:
    """Opens the query's sources on one pipeline (Kafka topics, read to their current end)."""

    def __init__(
        self, pipeline: Pipeline, bootstrap: str, batch_records: int, max_auction_ms: int
    ) -> None:
        self.pipeline = pipeline
        self.bootstrap = bootstrap
        self.batch_records = batch_records
        self.max_auction_ms = max_auction_ms
        self.sources: list[KafkaSource] = []

    def __call__(self, kind: str) -> Stream:
        source = KafkaSource(
            self.bootstrap,
            TOPICS[kind],
            schema=SCHEMAS[kind],
            bounded=True,
            max_batch_records=self.batch_records,
        )
        self.sources.append(source)
        stream = self.pipeline.source(
            source, timestamp="dateTime", max_out_of_orderness_ms=OUT_OF_ORDERNESS_MS, name=kind
        )
        return stream.select(*SCHEMAS[kind])


def _q0(src: Inputs) -> Stream:
    return src("bid")


def _q1(src: Inputs) -> Stream:
    return src("bid").select(
        "auction",
        "bidder",
        (pl.col("price").cast(pl.Float64) * 0.908).alias("price"),
        "dateTime",
        "extra",
    )


def _q2(src: Inputs) -> Stream:
    return src("bid").filter(pl.col("auction") % 123 == 0).select("auction", "price")


def _q5(src: Inputs) -> Stream:
    counts = (
        src("bid")
        .select("auction", "dateTime")
        .key_by("auction")
        .window(Hopping(WINDOW_MS, SLIDE_MS))
        .agg(agg.count(name="num"))
        .select("auction", "num", "window_start", "window_end")
    )
    # The counts of hopping window [s, s + 10 s) all have event time s + 10 s, the only
    # window end in the 2 s tumbling window [s + 10 s, s + 12 s): that window's max is the
    # hopping window's, with event time s + 12 s, exactly SLIDE_MS after its counts.
    top = counts.window(Tumbling(SLIDE_MS)).agg(agg.max("num", name="top"))
    joined = top.interval_join(
        counts, left_on="top", right_on="num", lower_ms=-SLIDE_MS, upper_ms=-SLIDE_MS
    )
    return joined.select(
        "auction",
        "num",
        pl.col("window_start_right").alias("window_start"),
        pl.col("window_end_right").alias("window_end"),
    )


def _q3(src: Inputs) -> Stream:
    persons = src("person").filter(pl.col("state").is_in(["OR", "ID", "CA"]))
    auctions = src("auction").filter(pl.col("category") == 10)
    # an incremental join without time bounds: both sides are kept for the whole run
    joined = persons.interval_join(
        auctions, left_on="id", right_on="seller", lower_ms=None, upper_ms=None
    )
    return joined.select("name", "city", "state", pl.col("id_right").alias("id"))


def _q4(src: Inputs) -> Stream:
    auctions = src("auction").select("id", "category", "dateTime", "expires")
    bids = src("bid").select("auction", "price", "dateTime")
    # a bid counts from the auction's dateTime to its expiry, which is at most
    # ``src.max_auction_ms`` later: the join bounds cover that, the filter does the rest
    joined = auctions.interval_join(
        bids, left_on="id", right_on="auction", lower_ms=0, upper_ms=src.max_auction_ms
    ).filter(pl.col("dateTime_right") <= pl.col("expires"))
    # all of an auction's bids lie within max_auction_ms, so they make one session, which
    # closes (and emits the auction's winning bid) once the watermark passes the expiry
    finals = (
        joined.select("id", "category", "price", "join_time")
        .key_by("id", "category")
        .window(Session(src.max_auction_ms + 1))
        .agg(agg.max("price", name="final"))
    )
    return (
        finals.select("category", "final", "window_end")
        .key_by("category")
        .window(WHOLE_RUN)
        .agg(agg.mean("final", name="avg_final"))
    )


def _q7(src: Inputs) -> Stream:
    bids = src("bid").select("auction", "price", "bidder", "dateTime", "extra")
    highest = (
        bids.select("price", "dateTime")
        .window(Tumbling(WINDOW_MS))
        .agg(agg.max("price", name="max_price"))
        .select("max_price", "window_end")
    )
    # a window's result has event time window_end; its bids are those of [end - 10 s, end)
    joined = highest.interval_join(
        bids, left_on="max_price", right_on="price", lower_ms=-WINDOW_MS, upper_ms=-1
    )
    return joined.select(
        "auction", pl.col("max_price").alias("price"), "bidder", "dateTime", "extra", "window_end"
    )


def _window_start(column: str) -> pl.Expr:
    return (pl.col(column) - pl.col(column) % WINDOW_MS).alias("window_start")


def _q8(src: Inputs) -> Stream:
    persons = src("person").select("id", "name", "dateTime", _window_start("dateTime"))
    auctions = src("auction").select("seller", "dateTime", _window_start("dateTime"))
    joined = persons.interval_join(
        auctions,
        left_on=["id", "window_start"],
        right_on=["seller", "window_start"],
        lower_ms=-(WINDOW_MS - 1),
        upper_ms=WINDOW_MS - 1,
    )
    # join_time lies in the pair's window, so the person's tumbling window (same start)
    # collapses their matches into one row
    return (
        joined.select("id", "name", "join_time")
        .key_by("id", "name")
        .window(Tumbling(WINDOW_MS))
        .agg(agg.count())
    )


_BUILDERS: dict[str, Callable[[Inputs], Stream]] = {
    "q0": _q0,
    "q1": _q1,
    "q2": _q2,
    "q3": _q3,
    "q4": _q4,
    "q5": _q5,
    "q7": _q7,
    "q8": _q8,
}


def build(
    query: str,
    bootstrap: str,
    sink: Sink,
    *,
    max_auction_ms: int,
    batch_records: int = 50_000,
) -> tuple[Pipeline, list[KafkaSource]]:
    """The pipeline of ``query`` writing its output columns to ``sink``, and its sources.

    ``max_auction_ms`` bounds how long an auction lasts (see
    :func:`benchmarks.nexmark.generator.max_auction_ms`); q4 needs it."""
    reason = unavailable(query)
    if reason is not None:
        raise ValueError(f"{query}: {reason}")
    pipeline = Pipeline()
    inputs = Inputs(pipeline, bootstrap, batch_records, max_auction_ms)
    _BUILDERS[query](inputs).select(*OUTPUT_COLUMNS[query]).sink(sink)
    return pipeline, inputs.sources
