"""The Nexmark generator: deterministic, the standard mix, id rules and distributions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from benchmarks.nexmark.generator import (
    FIRST_AUCTION_ID,
    FIRST_PERSON_ID,
    HOT_CHANNELS,
    US_CITIES,
    US_STATES,
    Events,
    GeneratorParams,
    accounted_sizes,
    generate,
    last_auction_id,
    last_person_id,
    max_auction_ms,
)
from polars.testing import assert_frame_equal

PARAMS = GeneratorParams(events=100_000, seed=7, rate=50_000)


@pytest.fixture(scope="module")
def events() -> Events:
    return generate(PARAMS)


def _numbers(kind: str, count: int) -> np.ndarray:
    n = np.arange(count, dtype=np.int64)
    offset = n % 50
    mask = {"person": offset < 1, "auction": (offset >= 1) & (offset < 4), "bid": offset >= 4}
    return n[mask[kind]]


def test_same_params_give_identical_frames(events: Events) -> None:
    again = generate(PARAMS)
    for kind, frame in events.frames().items():
        assert_frame_equal(frame, again.frames()[kind])


def test_another_seed_gives_other_events(events: Events) -> None:
    other = generate(GeneratorParams(events=PARAMS.events, seed=8, rate=PARAMS.rate))
    assert not other.bid.equals(events.bid)
    assert not other.person.equals(events.person)
    # the id and time skeleton does not depend on the seed
    assert other.person["id"].equals(events.person["id"])
    assert other.bid["dateTime"].equals(events.bid["dateTime"])


def test_mix_is_1_3_46(events: Events) -> None:
    counts = (events.person.height, events.auction.height, events.bid.height)
    assert counts == (2_000, 6_000, 92_000)
    small = generate(GeneratorParams(events=57))  # 1 epoch + 1 person, 3 auctions, 3 bids
    assert (small.person.height, small.auction.height, small.bid.height) == (2, 6, 49)


def test_ids_are_dense_and_times_follow_the_rate(events: Events) -> None:
    assert events.person["id"].to_list() == list(range(FIRST_PERSON_ID, FIRST_PERSON_ID + 2_000))
    assert events.auction["id"].to_list() == list(range(FIRST_AUCTION_ID, FIRST_AUCTION_ID + 6_000))
    for frame in events.frames().values():
        assert frame["dateTime"].is_sorted()
    span = events.bid["dateTime"].max() - PARAMS.first_event_ms  # type: ignore[operator]
    assert span == (PARAMS.events - 1) * 1000 // PARAMS.rate


def test_references_follow_the_generator_rules(events: Events) -> None:
    bid_n = _numbers("bid", PARAMS.events)
    newest_auction = last_auction_id(bid_n) + FIRST_AUCTION_ID
    newest_person = last_person_id(bid_n) + FIRST_PERSON_ID
    auction = events.bid["auction"].to_numpy()
    bidder = events.bid["bidder"].to_numpy()
    # recent auctions or up to 10 not yet created; recent persons likewise
    assert (auction >= np.maximum(newest_auction - 100, FIRST_AUCTION_ID)).all()
    assert (auction <= newest_auction + 10).all()
    assert (bidder >= np.maximum(newest_person - 1_000, FIRST_PERSON_ID)).all()
    assert (bidder <= newest_person + 10).all()
    # half the bids go to hot auctions (the first of the last block of 100)
    hot = auction == (newest_auction - FIRST_AUCTION_ID) // 100 * 100 + FIRST_AUCTION_ID
    assert 0.48 < hot.mean() < 0.56
    auction_n = _numbers("auction", PARAMS.events)
    seller = events.auction["seller"].to_numpy()
    newest = last_person_id(auction_n) + FIRST_PERSON_ID
    assert ((seller >= FIRST_PERSON_ID) & (seller <= newest + 10)).all()
    # sellers are existing persons, bar the 10-id lead of a random pick
    people = set(events.person["id"].to_list())
    existing = np.array([s in people for s in seller])
    assert existing.mean() > 0.97


def test_field_distributions(events: Events) -> None:
    price = events.bid["price"].to_numpy()
    assert price.min() >= 100 and price.max() <= 100_000_000
    assert 2.9 < np.log10(price / 100).mean() < 3.1  # log-uniform over six decades
    hot = events.bid["channel"].is_in(list(HOT_CHANNELS)).mean()
    assert 0.48 < hot < 0.52  # type: ignore[operator]
    assert set(events.bid["channel"].unique()) - set(HOT_CHANNELS) <= {
        f"channel-{i}" for i in range(10_000)
    }
    assert events.bid["url"].str.starts_with("https://www.nexmark.com/").all()
    assert set(events.auction["category"].unique()) == set(range(10, 15))
    assert set(events.person["state"].unique()) == set(US_STATES)
    assert set(events.person["city"].unique()) == set(US_CITIES)
    assert events.person["creditCard"].str.contains(r"^\d{4} \d{4} \d{4} \d{4}$").all()
    assert events.person["emailAddress"].str.ends_with(".com").all()
    auctions = events.auction
    assert (auctions["reserve"] > auctions["initialBid"]).all()
    length = auctions["expires"] - auctions["dateTime"]
    assert length.min() >= 1  # type: ignore[operator]
    assert length.max() <= max_auction_ms(PARAMS)  # type: ignore[operator]


def test_padding_gives_the_average_sizes(events: Events) -> None:
    sizes = accounted_sizes(events)
    for kind, average in (("person", 200), ("auction", 500), ("bid", 100)):
        s = sizes[kind]
        assert abs(s.mean() - average) < average * 0.02, kind  # type: ignore[operator]
        assert s.min() >= average * 0.75 and s.max() <= average * 1.25, kind  # type: ignore[operator]


def test_frames_have_the_flink_nexmark_columns(events: Events) -> None:
    assert events.person.columns == [
        "id",
        "name",
        "emailAddress",
        "creditCard",
        "city",
        "state",
        "dateTime",
        "extra",
    ]
    assert events.auction.columns == [
        "id", "itemName", "description", "initialBid", "reserve", "dateTime", "expires",
        "seller", "category", "extra",
    ]  # fmt: skip
    assert events.bid.columns == [
        "auction",
        "bidder",
        "price",
        "channel",
        "url",
        "dateTime",
        "extra",
    ]
    assert events.bid.schema["dateTime"] == pl.Int64
