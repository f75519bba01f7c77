"""The Nexmark queries in Quix Streams, reading the ``nexmark-*`` topics (run in the Quix venv).

Event time is ``dateTime`` (a topic timestamp extractor). Quix windows are per message key; with
``.final(closing_strategy="partition")`` they close when the partition's highest timestamp minus
a grace period (4 s here) passes their end, not on a watermark merged across partitions. Quix has
no end of input, so :class:`Bounded` emulates the final watermark (see there). Keys come from
``group_by``, which repartitions through a topic on the same broker (that traffic is part of the
measured run); results of keyed state are kept per key (the last value wins).

The run is bounded: the input topics' end offsets are read first, and the application stops once
every input partition is processed to its end and every record sent to a repartition topic has
been processed too.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from _common import (
    INPUTS,
    OUT_OF_ORDERNESS_MS,
    SLIDE_MS,
    TOPICS,
    WINDOW_MS,
    Clock,
    bid_q1,
    parse_args,
    write_rows,
    write_stats,
)


def _end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "nexmark-quix-offsets"})
    try:
        ends: dict[tuple[str, int], int] = {}
        metadata = consumer.list_topics(timeout=30)
        for topic in topics:
            for p in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                if high > low:
                    ends[(topic, p)] = high - 1
        return ends
    finally:
        consumer.close()


class Bounded:
    """Stops the application at the end of the input, repartition topics included.

    Quix has no end-of-input watermark: a window is final only once a later timestamp reaches
    its partition. When every input partition is processed, :attr:`flush` sends one record
    timestamped just past the last window's end plus grace to each partition of the topics that
    feed windows (what Flink's final watermark does for a bounded source); it falls in windows
    of its own that never close. (Not further: Quix steps through every window between the last
    expired one and the new time.)
    """

    def __init__(self, last_offsets: dict[tuple[str, int], int]) -> None:
        self.pending = dict(last_offsets)
        self.sources = {topic for topic, _ in last_offsets}
        self.events = 0
        self.sent_internal = 0
        self.done_internal = 0
        self.flushed = False
        self.end_wall: float | None = None
        self.stop: Callable[[], None] = lambda: None
        self.flush: Callable[[], int] = lambda: 0

    def sent(self, value: Any) -> None:
        self.sent_internal += 1

    def processed(self, topic: str, partition: int, offset: int) -> None:
        if topic in self.sources:
            self.events += 1
            last = self.pending.get((topic, partition))
            if last is not None and offset >= last:
                del self.pending[(topic, partition)]
        else:
            self.done_internal += 1
        if self.pending:
            return
        if not self.flushed:
            self.flushed = True
            self.sent_internal += self.flush()
        if self.done_internal == self.sent_internal:
            self.end_wall = time.time()
            self.stop()


LATEST_MS = [0]


def event_time(value: dict[str, Any], headers: Any, ts: int, ts_type: Any) -> int:
    t: int = value["dateTime"]
    if t > LATEST_MS[0]:
        LATEST_MS[0] = t
    return t


def end_of_input(bootstrap: str, app_id: str, names: tuple[str, ...]) -> Callable[[], int]:
    """Sends an end record to every partition of this app's repartition topics named ``names``;
    returns how many it sent."""

    def flush() -> int:
        from confluent_kafka import Producer

        end_ms = LATEST_MS[0] + WINDOW_MS + OUT_OF_ORDERNESS_MS + 1
        record = {"auction": -1, "price": -1, "dateTime": end_ms, "end_of_input": True}
        producer = Producer({"bootstrap.servers": bootstrap})
        sent = 0
        for topic in producer.list_topics(timeout=30).topics.values():
            if app_id in topic.topic and topic.topic.endswith(tuple(f"--{n}" for n in names)):
                for p in topic.partitions:
                    producer.produce(
                        topic.topic,
                        json.dumps(record).encode(),
                        key=b'"end"',
                        partition=p,
                        timestamp=end_ms,
                    )
                    sent += 1
        if producer.flush(30):
            raise RuntimeError("the end-of-input records were not delivered")
        return sent

    return flush


class Upsert:
    """The last value per key: a windowed query's final results once its input has ended."""

    def __init__(self, key: Callable[[Any], Any]) -> None:
        self.key = key
        self.rows: dict[Any, Any] = {}

    def __call__(self, value: Any) -> None:
        self.rows[self.key(value)] = value


def _most_bids(value: dict[str, Any], state: Any) -> dict[str, Any]:
    """Keyed by window start; a window's auction counts only grow, so the running maximum and
    its auctions are kept with one comparison per update."""
    best = state.get("best", 0)
    auctions = state.get("auctions", [])
    num, auction = value["num"], value["auction"]
    if num > best:
        best, auctions = num, [auction]
    elif num == best and auction not in auctions:
        auctions = [*auctions, auction]
    state.set("best", best)
    state.set("auctions", auctions)
    return {
        "window_start": value["window_start"],
        "window_end": value["window_end"],
        "num": best,
        "auctions": auctions,
    }


def _highest(agg: dict[str, Any], bid: dict[str, Any]) -> dict[str, Any]:
    if bid["price"] > agg["price"]:
        return {"price": bid["price"], "bids": [bid]}
    if bid["price"] == agg["price"]:
        return {"price": agg["price"], "bids": [*agg["bids"], bid]}
    return agg


def _person_id(v: dict[str, Any]) -> Any:
    return v["seller"] if "seller" in v else v.get("id")


def _auction_id(v: dict[str, Any]) -> Any:
    return v["id"] if "seller" in v else v["auction"]


def _q3_row(person: dict[str, Any], auction: int) -> dict[str, Any]:
    return {"name": person["name"], "city": person["city"], "state": person["state"], "id": auction}


def _q3_join(value: dict[str, Any], state: Any) -> list[dict[str, Any]]:
    """Keyed by person id: the person once seen, else the auctions waiting for them."""
    person = state.get("person")
    if "seller" in value:
        if person is None:
            state.set("waiting", [*state.get("waiting", []), value["id"]])
            return []
        return [_q3_row(person, value["id"])]
    state.set("person", value)
    waiting = state.get("waiting", [])
    if waiting:
        state.delete("waiting")
    return [_q3_row(value, a) for a in waiting]


def _q4_final(value: dict[str, Any], state: Any) -> list[dict[str, Any]]:
    """Keyed by auction id: the auction (bids that come first wait for it) and its highest bid
    within [dateTime, expires]; emits the auction's new highest bid when it changes."""
    auction = state.get("auction")
    if "seller" in value:
        auction = [value["category"], value["dateTime"], value["expires"]]
        state.set("auction", auction)
        bids = state.get("waiting", [])
        state.delete("waiting")
    elif auction is None:
        state.set("waiting", [*state.get("waiting", []), [value["price"], value["dateTime"]]])
        return []
    else:
        bids = [[value["price"], value["dateTime"]]]
    best = state.get("best")
    new = max([p for p, at in bids if auction[1] <= at <= auction[2]], default=None)
    if new is None or (best is not None and new <= best):
        return []
    state.set("best", new)
    return [
        {"auction": value.get("id", value.get("auction")), "category": auction[0], "final": new}
    ]


def _q4_average(value: dict[str, Any], state: Any) -> dict[str, Any]:
    """Keyed by category: each auction's latest highest bid replaces its previous one."""
    key = f"a{value['auction']}"
    old = state.get(key)
    total = state.get("sum", 0) + value["final"] - (old or 0)
    count = state.get("count", 0) + (old is None)
    state.set(key, value["final"])
    state.set("sum", total)
    state.set("count", count)
    return {"category": value["category"], "avg_final": total / count}


def _q8_join(value: dict[str, Any], state: Any) -> list[dict[str, Any]]:
    """Keyed by person id: the person's registration window, and the windows of the auctions
    seen before it; emits the person once an auction shares that window."""
    window = value["dateTime"] - value["dateTime"] % WINDOW_MS
    person = state.get("person")
    if "seller" in value:
        if person is None:
            seen = state.get("auction_windows", [])
            if window not in seen:
                state.set("auction_windows", [*seen, window])
            return []
        if person[2] != window or state.get("emitted", False):
            return []
        state.set("emitted", True)
        return [{"id": person[0], "name": person[1], "window_start": window}]
    state.set("person", [value["id"], value["name"], window])
    if window in state.get("auction_windows", []):
        state.set("emitted", True)
        return [{"id": value["id"], "name": value["name"], "window_start": window}]
    return []


def build(
    query: str, app: Any, app_id: str, sdfs: dict[str, Any], bounded: Bounded
) -> Callable[[], Any]:
    """Wires ``query``; returns a function giving the result rows after the run."""
    rows: list[Any] = []

    def group_by(sdf: Any, key: Any, name: str) -> Any:
        return sdf.update(bounded.sent).group_by(key, name=name)

    if query == "q0":
        sdfs["bid"].update(rows.append)
        return lambda: rows
    if query == "q1":
        sdfs["bid"].apply(bid_q1).update(rows.append)
        return lambda: rows
    if query == "q2":
        sdf = sdfs["bid"].filter(lambda b: b["auction"] % 123 == 0)
        sdf.apply(lambda b: {"auction": b["auction"], "price": b["price"]}).update(rows.append)
        return lambda: rows
    if query == "q3":
        # Quix's join_interval only matches records already processed, so it loses pairs
        # whose two topics are consumed out of timestamp order; a symmetric join in keyed
        # state over both topics (concat, then group_by the person id) does not.
        persons = sdfs["person"].filter(lambda p: p["state"] in ("OR", "ID", "CA"))
        auctions = sdfs["auction"].filter(lambda a: a["category"] == 10)
        both = group_by(persons.concat(auctions), _person_id, "person_id")
        both.apply(_q3_join, stateful=True, expand=True).update(rows.append)
        return lambda: rows
    if query == "q4":
        by_category = app.topic(
            f"{app_id}-finals",
            key_serializer="json",
            value_serializer="json",
            key_deserializer="json",
            value_deserializer="json",
        )
        both = sdfs["auction"].concat(sdfs["bid"])
        finals = group_by(both, _auction_id, "auction_id").apply(
            _q4_final, stateful=True, expand=True
        )
        finals.update(bounded.sent).to_topic(by_category, key=lambda v: v["category"])
        upsert = Upsert(lambda v: v["category"])
        app.dataframe(by_category).apply(_q4_average, stateful=True).update(upsert)
        return lambda: list(upsert.rows.values())
    if query == "q5":
        # Quix allows one group_by per dataframe; the per-window maximum re-keys the counts by
        # window through a topic of their own, read by a second dataframe of the same app.
        counts = (
            group_by(sdfs["bid"], lambda b: b["auction"], "auction")
            .hopping_window(WINDOW_MS, SLIDE_MS, grace_ms=OUT_OF_ORDERNESS_MS)
            .count()
            .final(closing_strategy="partition")
            .apply(
                lambda w, key, ts, headers: {
                    "auction": key,
                    "num": w["value"],
                    "window_start": w["start"],
                    "window_end": w["end"],
                },
                metadata=True,
            )
        )
        by_window = app.topic(
            f"{app_id}-counts",
            key_serializer="json",
            value_serializer="json",
            key_deserializer="json",
            value_deserializer="json",
            timestamp_extractor=lambda value, headers, ts, ts_type: value["window_start"],
        )
        counts.update(bounded.sent).to_topic(by_window, key=lambda v: v["window_start"])
        upsert = Upsert(lambda v: v["window_start"])
        app.dataframe(by_window).apply(_most_bids, stateful=True).update(upsert)
        return lambda: [
            {
                "auction": a,
                "num": w["num"],
                "window_start": w["window_start"],
                "window_end": w["window_end"],
            }
            for w in upsert.rows.values()
            for a in w["auctions"]
        ]
    if query == "q7":
        upsert = Upsert(lambda v: v["start"])
        (
            group_by(sdfs["bid"], lambda b: 0, "all")
            .tumbling_window(WINDOW_MS, grace_ms=OUT_OF_ORDERNESS_MS)
            .reduce(_highest, lambda b: {"price": b["price"], "bids": [b]})
            .final(closing_strategy="partition")
            .update(upsert)
        )
        return lambda: [
            {
                "auction": b["auction"],
                "price": b["price"],
                "bidder": b["bidder"],
                "dateTime": b["dateTime"],
                "extra": b["extra"],
                "window_end": w["end"],
            }
            for w in upsert.rows.values()
            for b in w["value"]["bids"]
        ]
    if query == "q8":
        # Tumbling windows closed per partition drop the topic read behind the other (persons
        # vs auctions) as late, and closed per key never close at the end of the input; the
        # same-window join is keyed state instead, exact in any arrival order.
        both = group_by(sdfs["person"].concat(sdfs["auction"]), _person_id, "person_id")
        both.apply(_q8_join, stateful=True, expand=True).update(rows.append)
        return lambda: rows
    raise NotImplementedError(query)


# the group_by names whose repartition topics feed windows (they get the end-of-input record)
WINDOWED = {"q5": ("auction",), "q7": ("all",)}


def main() -> int:
    args = parse_args()
    clock = Clock()
    from quixstreams import Application

    topics = [TOPICS[kind] for kind in INPUTS[args.query]]
    bounded = Bounded(_end_offsets(args.bootstrap, topics))
    app_id = f"nexmark-quix-{args.query}-{uuid.uuid4().hex[:8]}"
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=app_id,
        auto_offset_reset="earliest",
        state_dir=str(args.work_dir / "quix-state"),
        use_changelog_topics=False,
        on_message_processed=bounded.processed,
        loglevel="WARNING",
    )
    bounded.stop = app.stop
    if args.query in WINDOWED:
        bounded.flush = end_of_input(args.bootstrap, app_id, WINDOWED[args.query])
    sdfs = {
        kind: app.dataframe(
            app.topic(
                TOPICS[kind],
                value_deserializer="json",
                timestamp_extractor=event_time,
            )
        )
        for kind in INPUTS[args.query]
    }
    results = build(args.query, app, app_id, sdfs, bounded)
    clock.ready()
    if bounded.pending:
        # a safety net only: the application stops itself at the end of the input
        app.run(timeout=60)
    rows = results()
    clock.done(bounded.events, end_wall=bounded.end_wall)
    write_rows(args.output, rows)
    write_stats(args.stats, clock.stats)
    _delete_own_topics(args.bootstrap, app_id)
    return 0


def _delete_own_topics(bootstrap: str, app_id: str) -> None:
    """Drops the repartition topics this run created, so runs leave the broker as they found
    it (best effort, after the figures are taken)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    own = [t for t in admin.list_topics(timeout=30).topics if app_id in t]
    if own:
        for future in admin.delete_topics(own, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(30)


if __name__ == "__main__":
    sys.exit(main())
