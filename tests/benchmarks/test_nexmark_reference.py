"""The DuckDB reference queries on small hand-made inputs, and the output comparison."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from benchmarks.nexmark.generator import AUCTION_SCHEMA, BID_SCHEMA, PERSON_SCHEMA, Events
from benchmarks.nexmark.reference import compare, expected

T0 = 1_700_000_000_000  # a multiple of 10 s


def _person(id: int, state: str, t: int, name: str | None = None) -> dict[str, Any]:
    return {
        "id": id, "name": name or f"p{id}", "emailAddress": "a@b.com",
        "creditCard": "0000 0000 0000 0000", "city": "Boise", "state": state,
        "dateTime": T0 + t, "extra": "",
    }  # fmt: skip


def _auction(id: int, seller: int, category: int, t: int, expires: int = 0) -> dict[str, Any]:
    return {
        "id": id, "itemName": "i", "description": "d", "initialBid": 1, "reserve": 2,
        "dateTime": T0 + t, "expires": T0 + (expires or t + 1_000), "seller": seller,
        "category": category, "extra": "",
    }  # fmt: skip


def _bid(auction: int, price: int, t: int, bidder: int = 1) -> dict[str, Any]:
    return {
        "auction": auction, "bidder": bidder, "price": price, "channel": "Google",
        "url": "https://www.nexmark.com/a/b/c/item.htm?query=1", "dateTime": T0 + t,
        "extra": "",
    }  # fmt: skip


def _events(
    persons: list[dict[str, Any]] = [],  # noqa: B006
    auctions: list[dict[str, Any]] = [],  # noqa: B006
    bids: list[dict[str, Any]] = [],  # noqa: B006
) -> Events:
    return Events(
        person=pl.DataFrame(persons, schema=PERSON_SCHEMA),
        auction=pl.DataFrame(auctions, schema=AUCTION_SCHEMA),
        bid=pl.DataFrame(bids, schema=BID_SCHEMA),
    )


def _rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return sorted(frame.rows())


def test_q0_q1_q2() -> None:
    ev = _events(bids=[_bid(1107, 100, 0), _bid(1230, 250, 5), _bid(1353, 1, 9)])
    assert expected("q0", ev).height == 3
    q1 = expected("q1", ev)
    assert q1.columns == ["auction", "bidder", "price", "dateTime", "extra"]
    assert q1.schema["price"] == pl.Float64
    assert sorted(q1["price"].to_list()) == pytest.approx([0.908, 90.8, 227.0])
    # 1107 = 9 * 123, 1353 = 11 * 123; 1230 = 10 * 123 too; 1231 is not
    ev2 = _events(bids=[_bid(1107, 1, 0), _bid(1231, 2, 0)])
    assert _rows(expected("q2", ev2)) == [(1107, 1)]


def test_q3_local_sellers_of_category_10() -> None:
    ev = _events(
        persons=[_person(1, "OR", 0), _person(2, "WA", 0), _person(3, "CA", 0)],
        auctions=[
            _auction(10, 1, 10, 5),
            _auction(11, 2, 10, 5),  # seller in WA
            _auction(12, 3, 11, 5),  # category 11
            _auction(13, 3, 10, 5),
        ],
    )
    assert _rows(expected("q3", ev)) == [("p1", "Boise", "OR", 10), ("p3", "Boise", "CA", 13)]


def test_q4_mean_winning_bid_per_category() -> None:
    ev = _events(
        auctions=[
            _auction(1, 0, 10, 0, expires=100),
            _auction(2, 0, 10, 0, expires=100),
            _auction(3, 0, 11, 0, expires=100),
            _auction(4, 0, 12, 50, expires=100),  # only bids outside its life
        ],
        bids=[
            _bid(1, 5, 0),
            _bid(1, 7, 100),  # at expiry: counts
            _bid(1, 99, 101),  # after expiry
            _bid(2, 3, 10),
            _bid(3, 40, 20),
            _bid(4, 1_000, 49),  # before the auction opened
        ],
    )
    assert _rows(expected("q4", ev)) == [(10, 5.0), (11, 40.0)]


def test_q5_hottest_auctions_per_sliding_window() -> None:
    # auction 1: bids at 0.5 s and 1 s; auction 2: bids at 3 s, 3.5 s, 4 s
    ev = _events(
        bids=[
            *(_bid(1, 1, t) for t in (500, 1_000)),
            *(_bid(2, 1, t) for t in (3_000, 3_500, 4_000)),
        ]
    )
    rows = [(r[2] - T0, r[0], r[1]) for r in _rows(expected("q5", ev))]
    assert sorted(rows) == [
        (-8_000, 1, 2),  # [-8 s, 2 s): auction 2 has no bids yet
        (-6_000, 1, 2),  # [-6 s, 4 s): 2 bids each, a tie: both kept
        (-6_000, 2, 2),
        (-4_000, 2, 3),
        (-2_000, 2, 3),
        (0, 2, 3),
        (2_000, 2, 3),
        (4_000, 2, 1),  # [4 s, 14 s): only the bid at 4 s
    ]
    assert all(r[3] - r[2] == 10_000 for r in expected("q5", ev).rows())
    ties = _events(bids=[_bid(1, 1, 0), _bid(2, 1, 0)])
    assert len(expected("q5", ties)) == 10  # both auctions in each of 5 windows


def test_q7_highest_bids_per_tumbling_window() -> None:
    ev = _events(
        bids=[
            _bid(1, 10, 0),
            _bid(2, 30, 1_000),
            _bid(3, 30, 9_999),  # a tie at the top: both kept
            _bid(4, 20, 10_000),  # next window
        ]
    )
    rows = expected("q7", ev).select("auction", "price", "window_end").rows()
    assert sorted(rows) == [(2, 30, T0 + 10_000), (3, 30, T0 + 10_000), (4, 20, T0 + 20_000)]


def test_q8_new_sellers_per_window() -> None:
    ev = _events(
        persons=[_person(1, "OR", 1_000), _person(2, "OR", 9_000), _person(3, "OR", 0)],
        auctions=[
            _auction(10, 1, 10, 9_999),  # same window as person 1
            _auction(11, 1, 10, 5_000),  # twice: still one row
            _auction(12, 2, 10, 10_000),  # next window: no
        ],
    )
    assert _rows(expected("q8", ev)) == [(1, "p1", T0)]


def test_compare_accepts_any_order_and_float_noise() -> None:
    ev = _events(bids=[_bid(1, 100, 0), _bid(2, 250, 5)])
    reference = expected("q1", ev)
    shuffled = reference.reverse().with_columns(pl.col("price") * (1 + 1e-12))
    assert compare("q1", shuffled, reference).correct


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.head(1),  # a row missing
        lambda f: pl.concat([f, f.head(1)]),  # a duplicate
        lambda f: f.with_columns(pl.col("price") + 0.01),  # a value changed
        lambda f: f.drop("extra"),  # a column missing
    ],
)
def test_compare_rejects_wrong_output(change: Any) -> None:
    ev = _events(bids=[_bid(1, 100, 0), _bid(2, 250, 5)])
    reference = expected("q1", ev)
    verdict = compare("q1", change(reference), reference)
    assert not verdict.correct
    assert verdict.detail
    assert not compare("q1", None, reference).correct
