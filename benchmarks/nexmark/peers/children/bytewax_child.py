"""The Nexmark queries as Bytewax dataflows reading the ``nexmark-*`` topics (in the Bytewax venv).

One worker, run in this process (``bytewax.testing.run_main``, which is what ``python -m
bytewax.run`` does for one worker). ``KafkaSource(tail=False)`` ends each partition at its end
offset, so the dataflow stops by itself at the end of the input. Windows use ``EventClock`` on
``dateTime`` waiting 4 s; its watermark normally also advances with system time, which would
make a replayed topic's events late, so the clock's "now" is held constant and the watermark is
pure event time (the latest timestamp seen minus 4 s), as in Flink. Bytewax keeps a clock per
key, so a window closes when its own key's events pass it, or at the end of the input.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
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

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FROZEN_NOW = datetime(2000, 1, 1, tzinfo=UTC)


def _ms(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(milliseconds=1)


def _event_time(value: dict[str, Any]) -> datetime:
    return EPOCH + timedelta(milliseconds=value["dateTime"])


def _clock(ts_getter: Any = _event_time) -> Any:
    from bytewax.operators.windowing import EventClock

    return EventClock(
        ts_getter,
        wait_for_system_duration=timedelta(milliseconds=OUT_OF_ORDERNESS_MS),
        now_getter=lambda: FROZEN_NOW,
        to_system_utc=lambda ts: None,
    )


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, value: Any) -> Any:
        self.n += 1
        return value


def build(query: str, bootstrap: str, rows: list[Any], counter: Counter) -> Any:
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink

    flow = Dataflow(f"nexmark_{query}")

    def source(kind: str) -> Any:
        messages = op.input(kind, flow, KafkaSource([bootstrap], [TOPICS[kind]], tail=False))
        return op.map(f"{kind}_json", messages, lambda m: counter(json.loads(m.value)))

    def out(stream: Any) -> None:
        op.output("out", stream, TestingSink(rows))

    if query == "q0":
        out(source("bid"))
    elif query == "q1":
        out(op.map("q1", source("bid"), bid_q1))
    elif query == "q2":
        bids = op.filter("q2_filter", source("bid"), lambda b: b["auction"] % 123 == 0)
        out(op.map("q2", bids, lambda b: {"auction": b["auction"], "price": b["price"]}))
    elif query == "q3":
        persons = op.filter("states", source("person"), lambda p: p["state"] in ("OR", "ID", "CA"))
        auctions = op.filter("category", source("auction"), lambda a: a["category"] == 10)
        tagged = op.merge(
            "both",
            op.key_on("person_id", persons, lambda p: str(p["id"])),
            op.key_on("seller", auctions, lambda a: str(a["seller"])),
        )
        joined = op.stateful_flat_map("join", tagged, _q3_join)
        out(op.key_rm("unkey", joined))
    elif query == "q4":
        auctions = op.key_on("auction_id", source("auction"), lambda a: str(a["id"]))
        bids = op.key_on("bid_auction", source("bid"), lambda b: str(b["auction"]))
        finals = op.fold_final("final", op.merge("both", auctions, bids), _Final, _Final.add)
        winners = op.filter_map("winners", op.key_rm("unkey", finals), _Final.result)
        by_category = op.key_on("by_category", winners, lambda cf: str(cf[0]))
        sums = op.fold_final(
            "average", by_category, lambda: [0, 0, 0], lambda s, cf: [cf[0], s[1] + cf[1], s[2] + 1]
        )
        out(
            op.map(
                "avg",
                op.key_rm("unkey2", sums),
                lambda s: {"category": s[0], "avg_final": s[1] / s[2]},
            )
        )
    elif query == "q5":
        # One key: the per-window auction counts live in one accumulator per open window.
        bids = op.key_on("all", source("bid"), lambda b: "all")
        windower = win.SlidingWindower(
            length=timedelta(milliseconds=WINDOW_MS),
            offset=timedelta(milliseconds=SLIDE_MS),
            align_to=EPOCH,
        )
        counts = win.fold_window("counts", bids, _clock(), windower, dict, _count, _merge_counts)
        out(op.flat_map("most", op.key_rm("unkey", counts.down), _most_bids))
    elif query == "q7":
        bids = op.key_on("all", source("bid"), lambda b: "all")
        windower = win.TumblingWindower(length=timedelta(milliseconds=WINDOW_MS), align_to=EPOCH)
        highest = win.fold_window(
            "highest", bids, _clock(), windower, lambda: (-1, []), _highest, _merge_highest
        )
        out(op.flat_map("rows", op.key_rm("unkey", highest.down), _q7_rows))
    elif query == "q8":
        persons = op.key_on("person_id", source("person"), lambda p: str(p["id"]))
        sellers = op.key_on("seller", source("auction"), lambda a: str(a["seller"]))
        windower = win.TumblingWindower(length=timedelta(milliseconds=WINDOW_MS), align_to=EPOCH)
        both = win.fold_window(
            "same_window",
            op.merge("both", persons, sellers),
            _clock(),
            windower,
            lambda: [None, False],
            _q8_fold,
            lambda a, b: [a[0] or b[0], a[1] or b[1]],
        )
        out(op.filter_map("rows", op.key_rm("unkey", both.down), _q8_row))
    else:
        raise NotImplementedError(query)
    return flow


def _q3_join(state: Any, value: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """A symmetric hash join: state is [person or None, auction ids waiting for it]."""
    person, waiting = state if state is not None else (None, [])
    if "seller" in value:
        if person is None:
            return [None, [*waiting, value["id"]]], []
        return [person, []], [_q3_row(person, value["id"])]
    return [value, []], [_q3_row(value, a) for a in waiting]


def _q3_row(p: dict[str, Any], auction: int) -> dict[str, Any]:
    return {"name": p["name"], "city": p["city"], "state": p["state"], "id": auction}


class _Final:
    """Per auction: its category and window, and the highest bid inside it (bids that come
    before their auction are kept until it does)."""

    def __init__(self) -> None:
        self.auction: dict[str, Any] | None = None
        self.best: int | None = None
        self.waiting: list[tuple[int, int]] = []

    def add(self, value: dict[str, Any]) -> _Final:
        if "seller" in value:
            self.auction = value
            for price, at in self.waiting:
                self._bid(price, at)
            self.waiting = []
        elif self.auction is None:
            self.waiting.append((value["price"], value["dateTime"]))
        else:
            self._bid(value["price"], value["dateTime"])
        return self

    def _bid(self, price: int, at: int) -> None:
        a = self.auction
        if a is not None and a["dateTime"] <= at <= a["expires"]:
            self.best = price if self.best is None else max(self.best, price)

    def result(self) -> tuple[int, int] | None:
        if self.auction is None or self.best is None:
            return None
        return self.auction["category"], self.best


def _count(counts: dict[int, int], bid: dict[str, Any]) -> dict[int, int]:
    counts[bid["auction"]] = counts.get(bid["auction"], 0) + 1
    return counts


def _merge_counts(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    for k, v in b.items():
        a[k] = a.get(k, 0) + v
    return a


def _most_bids(window: tuple[int, dict[int, int]]) -> list[dict[str, Any]]:
    window_id, counts = window
    start = window_id * SLIDE_MS
    top = max(counts.values())
    return [
        {"auction": a, "num": n, "window_start": start, "window_end": start + WINDOW_MS}
        for a, n in counts.items()
        if n == top
    ]


def _highest(acc: tuple[int, list[Any]], bid: dict[str, Any]) -> tuple[int, list[Any]]:
    price, bids = acc
    if bid["price"] > price:
        return bid["price"], [bid]
    if bid["price"] == price:
        bids.append(bid)
    return price, bids


def _merge_highest(a: tuple[int, list[Any]], b: tuple[int, list[Any]]) -> tuple[int, list[Any]]:
    if a[0] == b[0]:
        return a[0], a[1] + b[1]
    return a if a[0] > b[0] else b


def _q7_rows(window: tuple[int, tuple[int, list[Any]]]) -> list[dict[str, Any]]:
    window_id, (_, bids) = window
    end = (window_id + 1) * WINDOW_MS
    return [
        {
            "auction": b["auction"],
            "price": b["price"],
            "bidder": b["bidder"],
            "dateTime": b["dateTime"],
            "extra": b["extra"],
            "window_end": end,
        }
        for b in bids
    ]


def _q8_fold(acc: list[Any], value: dict[str, Any]) -> list[Any]:
    if "seller" in value:
        return [acc[0], True]
    return [(value["id"], value["name"]), acc[1]]


def _q8_row(window: tuple[int, list[Any]]) -> dict[str, Any] | None:
    window_id, (person, sold) = window
    if person is None or not sold:
        return None
    return {"id": person[0], "name": person[1], "window_start": window_id * WINDOW_MS}


def main() -> int:
    args = parse_args()
    clock = Clock()
    if args.query not in INPUTS:
        write_stats(args.stats, {"na_reason": f"unknown query {args.query}"})
        return 0
    from bytewax.testing import run_main

    rows: list[Any] = []
    counter = Counter()
    flow = build(args.query, args.bootstrap, rows, counter)
    clock.ready()
    run_main(flow)
    clock.done(counter.n)
    write_rows(args.output, rows)
    write_stats(args.stats, clock.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
