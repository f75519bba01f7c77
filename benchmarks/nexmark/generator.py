"""A vectorized, seeded Nexmark event generator (Person / Auction / Bid).

It follows the behaviour of the Nexmark generator used by Beam and by Flink's Nexmark suite:

- Event number ``n`` (0-based) is a person, an auction or a bid by ``n % 50``: offset 0 is a
  person, 1-3 auctions, 4-49 bids (the 1 : 3 : 46 mix).
- Person and auction ids are dense and increasing from 1000; the "last id" of event ``n`` is the
  id of the newest person/auction generated at or before ``n``.
- A bid's auction is *hot* with probability 1 - 1/``hot_auction_ratio`` (the first auction of
  the last block of 100), else uniform over the last ``in_flight_auctions`` auctions plus 10 not
  yet created (the "lead": a bid may name an auction created just after it). Bidders and sellers
  likewise: hot (second / first person of the last block of 100) with probability
  1 - 1/``hot_*_ratio``, else uniform over the last ``active_people`` persons plus a lead of 10.
- Prices are ``round(10 ** (6u) * 100)`` for uniform ``u``: log-uniform cents in [100, 1e8].
- Half the bids come from four hot channels, the rest from ``channel-0`` … ``channel-9999``,
  each with a fixed URL.
- An auction expires ``1 + uniform[0, 2h)`` ms after it opens, where ``h`` is the event time it
  takes to create ``in_flight_auctions`` more auctions.
- ``extra`` pads each event so that its accounted size (8 bytes per number plus string lengths)
  averages 200 (person), 500 (auction) and 100 (bid) bytes, within +-20 %.
- Event ``n`` happens at ``first_event_ms + n * 1000 // rate`` (events are in time order).

Randomness comes from one PCG64 stream seeded by ``seed`` and drawn in a fixed order, so the same
:class:`GeneratorParams` always give identical frames. The values are not bit-identical to the
Java generator's (a different random stream); the distributions and id rules are the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa  # type: ignore[import-untyped]

__all__ = [
    "AUCTION_SCHEMA",
    "BID_SCHEMA",
    "FIRST_AUCTION_ID",
    "FIRST_CATEGORY_ID",
    "FIRST_PERSON_ID",
    "PERSON_SCHEMA",
    "Events",
    "GeneratorParams",
    "accounted_sizes",
    "generate",
    "max_auction_ms",
]

FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
NUM_CATEGORIES = 5
PERSON_PROPORTION, AUCTION_PROPORTION, BID_PROPORTION = 1, 3, 46
TOTAL_PROPORTION = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION
HOT_BLOCK = 100  # hot persons/auctions are the first (or second) of the last block of 100
ID_LEAD = 10  # ids a random pick may take beyond the newest one
CHANNELS = 10_000
HOT_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")
US_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")
US_CITIES = (
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
)
FIRST_NAMES: tuple[str, ...] = (
    *("Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter"),
    "Walter",
)
LAST_NAMES: tuple[str, ...] = (
    *("Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones"),
    "Noris",
)

PERSON_SCHEMA = pl.Schema(
    {
        "id": pl.Int64(),
        "name": pl.String(),
        "emailAddress": pl.String(),
        "creditCard": pl.String(),
        "city": pl.String(),
        "state": pl.String(),
        "dateTime": pl.Int64(),
        "extra": pl.String(),
    }
)
AUCTION_SCHEMA = pl.Schema(
    {
        "id": pl.Int64(),
        "itemName": pl.String(),
        "description": pl.String(),
        "initialBid": pl.Int64(),
        "reserve": pl.Int64(),
        "dateTime": pl.Int64(),
        "expires": pl.Int64(),
        "seller": pl.Int64(),
        "category": pl.Int64(),
        "extra": pl.String(),
    }
)
BID_SCHEMA = pl.Schema(
    {
        "auction": pl.Int64(),
        "bidder": pl.Int64(),
        "price": pl.Int64(),
        "channel": pl.String(),
        "url": pl.String(),
        "dateTime": pl.Int64(),
        "extra": pl.String(),
    }
)

Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class GeneratorParams:
    """What determines the events: equal params give identical frames."""

    events: int
    seed: int = 42
    rate: int = 100_000
    """Events per second of event time."""
    first_event_ms: int = 1_700_000_000_000
    active_people: int = 1_000
    in_flight_auctions: int = 100
    hot_auction_ratio: int = 2
    hot_sellers_ratio: int = 4
    hot_bidders_ratio: int = 4
    person_bytes: int = 200
    auction_bytes: int = 500
    bid_bytes: int = 100

    def __post_init__(self) -> None:
        if self.events < 0 or self.rate < 1:
            raise ValueError("events must be >= 0 and rate >= 1")

    def label(self) -> dict[str, Any]:
        return {"events": self.events, "seed": self.seed, "rate": self.rate}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Events:
    """The three event streams, each in event-time order."""

    person: pl.DataFrame
    auction: pl.DataFrame
    bid: pl.DataFrame

    def frames(self) -> dict[str, pl.DataFrame]:
        return {"person": self.person, "auction": self.auction, "bid": self.bid}

    @property
    def total(self) -> int:
        return self.person.height + self.auction.height + self.bid.height


# -- the id rules (pure, vectorized over event numbers) ------------------------------------------


def last_person_id(n: Ints) -> Ints:
    """Base-0 id of the newest person at or before event ``n``."""
    epoch, offset = np.divmod(n, TOTAL_PROPORTION)
    ids: Ints = epoch * PERSON_PROPORTION + np.minimum(offset, PERSON_PROPORTION - 1)
    return ids


def last_auction_id(n: Ints) -> Ints:
    """Base-0 id of the newest auction at or before event ``n`` (-1 before the first)."""
    epoch, offset = np.divmod(n, TOTAL_PROPORTION)
    in_epoch = np.clip(offset - PERSON_PROPORTION, -1, AUCTION_PROPORTION - 1)
    ids: Ints = epoch * AUCTION_PROPORTION + in_epoch
    return ids


def _random_person(rng: np.random.Generator, n: Ints, active: int) -> Ints:
    people = last_person_id(n) + 1
    window = np.minimum(people, active)
    return people - window + _below(rng, window + ID_LEAD)


def _random_auction(rng: np.random.Generator, n: Ints, in_flight: int) -> Ints:
    last = last_auction_id(n)
    low = np.maximum(last - in_flight, 0)
    return low + _below(rng, last - low + 1 + ID_LEAD)


def _below(rng: np.random.Generator, bound: Ints) -> Ints:
    """Uniform integers in ``[0, bound)`` elementwise."""
    drawn: Ints = np.floor(rng.random(bound.shape[0]) * bound).astype(np.int64)
    return drawn


def _hot(rng: np.random.Generator, count: int, ratio: int) -> npt.NDArray[np.bool_]:
    return rng.integers(0, ratio, count) > 0


def _price(rng: np.random.Generator, count: int) -> Ints:
    return np.round(10.0 ** (rng.random(count) * 6.0) * 100.0).astype(np.int64)


# -- strings -------------------------------------------------------------------------------------

_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def _from_buffer(lengths: Ints, data: npt.NDArray[np.uint8]) -> pl.Series:
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    array = pa.LargeStringArray.from_buffers(
        lengths.shape[0], pa.py_buffer(offsets), pa.py_buffer(data)
    )
    series = pl.Series(array)
    assert isinstance(series, pl.Series)
    return series


def _letters(rng: np.random.Generator, lengths: Ints) -> pl.Series:
    """Random lowercase strings of exactly ``lengths``."""
    data = _LETTERS[rng.integers(0, 26, int(lengths.sum()), dtype=np.uint8)]
    return _from_buffer(lengths, data)


def _words(rng: np.random.Generator, count: int, max_length: int) -> pl.Series:
    """Random strings of 3..max_length-1 characters, one in 13 a space, then trimmed."""
    lengths = rng.integers(3, max_length, count).astype(np.int64)
    total = int(lengths.sum())
    data = _LETTERS[rng.integers(0, 26, total, dtype=np.uint8)]
    data[rng.integers(0, 13, total) == 0] = ord(" ")
    return _from_buffer(lengths, data).str.strip_chars(" ")


def _padding(rng: np.random.Generator, used: Ints, average: int) -> pl.Series:
    """``extra`` so that ``used + len(extra)`` averages ``average`` (+-20 % of the rest)."""
    want = np.maximum(average - used, 0)
    delta = np.round(want * 0.2).astype(np.int64)
    lengths = want - delta + _below(rng, 2 * delta)
    return _letters(rng, lengths)


def _pick(rng: np.random.Generator, choices: tuple[str, ...], count: int) -> pl.Series:
    return pl.Series(choices, dtype=pl.String).gather(rng.integers(0, len(choices), count))


def _base_url(rng: np.random.Generator) -> str:
    parts = ["".join(chr(c) for c in _LETTERS[rng.integers(0, 26, 5)]) for _ in range(3)]
    return "https://www.nexmark.com/" + "/".join(parts) + "/item.htm?query=1"


def _channel_table(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """``(channels, urls)``: the 4 hot channels first, then ``channel-0`` … ``channel-9999``;
    nine in ten of the latter carry a ``channel_id`` (the channel number's bits reversed)."""
    names = list(HOT_CHANNELS) + [f"channel-{i}" for i in range(CHANNELS)]
    urls = [_base_url(rng) for _ in HOT_CHANNELS]
    tagged = rng.integers(0, 10, CHANNELS) > 0
    for i in range(CHANNELS):
        url = _base_url(rng)
        if tagged[i]:
            url += f"&channel_id={int(f'{i:032b}'[::-1], 2)}"
        urls.append(url)
    return names, urls


# -- the three event kinds -----------------------------------------------------------------------


def _times(p: GeneratorParams, n: Ints) -> Ints:
    return p.first_event_ms + n * 1000 // p.rate


def _people(rng: np.random.Generator, p: GeneratorParams, n: Ints) -> pl.DataFrame:
    count = n.shape[0]
    name = _pick(rng, FIRST_NAMES, count) + " " + _pick(rng, LAST_NAMES, count)
    email = _words(rng, count, 7) + "@" + _words(rng, count, 5) + ".com"
    digits = rng.integers(0, 10_000, (4, count))
    card = pl.concat_str([pl.Series(d).cast(pl.String).str.zfill(4) for d in digits], separator=" ")
    city = _pick(rng, US_CITIES, count)
    state = _pick(rng, US_STATES, count)
    frame = pl.DataFrame(
        {
            "id": last_person_id(n) + FIRST_PERSON_ID,
            "name": name,
            "emailAddress": email,
            "creditCard": pl.select(card).to_series(),
            "city": city,
            "state": state,
            "dateTime": _times(p, n),
        }
    )
    used = (
        8
        + frame.select(
            sum(pl.col(c).str.len_bytes() for c in ("name", "emailAddress", "creditCard", "city"))
            + pl.col("state").str.len_bytes()
        ).to_series()
    )
    extra = _padding(rng, used.cast(pl.Int64).to_numpy(), p.person_bytes)
    return frame.with_columns(extra=extra).cast(dict(PERSON_SCHEMA))  # type: ignore[arg-type]


def max_auction_ms(p: GeneratorParams) -> int:
    """An upper bound on ``expires - dateTime`` for these params."""
    ahead = p.in_flight_auctions * TOTAL_PROPORTION // AUCTION_PROPORTION
    return 2 * (ahead * 1000 // p.rate + 1) + 1


def _auctions(rng: np.random.Generator, p: GeneratorParams, n: Ints) -> pl.DataFrame:
    count = n.shape[0]
    hot = _hot(rng, count, p.hot_sellers_ratio)
    seller = np.where(
        hot,
        last_person_id(n) // HOT_BLOCK * HOT_BLOCK,
        _random_person(rng, n, p.active_people),
    )
    category = FIRST_CATEGORY_ID + rng.integers(0, NUM_CATEGORIES, count)
    initial = _price(rng, count)
    now = _times(p, n)
    ahead = p.in_flight_auctions * TOTAL_PROPORTION // AUCTION_PROPORTION
    horizon = _times(p, n + ahead) - now
    expires = now + 1 + _below(rng, np.maximum(horizon * 2, 1))
    item = _words(rng, count, 20)
    description = _words(rng, count, 100)
    reserve = initial + _price(rng, count)
    used = 8 + item.str.len_bytes() + description.str.len_bytes() + 40
    extra = _padding(rng, used.cast(pl.Int64).to_numpy(), p.auction_bytes)
    frame = pl.DataFrame(
        {
            "id": last_auction_id(n) + FIRST_AUCTION_ID,
            "itemName": item,
            "description": description,
            "initialBid": initial,
            "reserve": reserve,
            "dateTime": now,
            "expires": expires,
            "seller": seller + FIRST_PERSON_ID,
            "category": category,
            "extra": extra,
        }
    )
    return frame.cast(dict(AUCTION_SCHEMA))  # type: ignore[arg-type]


def _bids(
    rng: np.random.Generator, p: GeneratorParams, n: Ints, table: tuple[list[str], list[str]]
) -> pl.DataFrame:
    count = n.shape[0]
    auction = np.where(
        _hot(rng, count, p.hot_auction_ratio),
        last_auction_id(n) // HOT_BLOCK * HOT_BLOCK,
        _random_auction(rng, n, p.in_flight_auctions),
    )
    bidder = np.where(
        _hot(rng, count, p.hot_bidders_ratio),
        last_person_id(n) // HOT_BLOCK * HOT_BLOCK + 1,
        _random_person(rng, n, p.active_people),
    )
    price = _price(rng, count)
    channel = np.where(
        _hot(rng, count, 2),
        rng.integers(0, len(HOT_CHANNELS), count),
        len(HOT_CHANNELS) + rng.integers(0, CHANNELS, count),
    )
    names, urls = table
    extra = _padding(rng, np.full(count, 32, dtype=np.int64), p.bid_bytes)
    frame = pl.DataFrame(
        {
            "auction": auction + FIRST_AUCTION_ID,
            "bidder": bidder + FIRST_PERSON_ID,
            "price": price,
            "channel": pl.Series(names, dtype=pl.String).gather(channel),
            "url": pl.Series(urls, dtype=pl.String).gather(channel),
            "dateTime": _times(p, n),
            "extra": extra,
        }
    )
    return frame.cast(dict(BID_SCHEMA))  # type: ignore[arg-type]


def generate(p: GeneratorParams) -> Events:
    """All ``p.events`` events, split by kind (each frame in event-number order)."""
    rng = np.random.default_rng(p.seed)
    n = np.arange(p.events, dtype=np.int64)
    offset = n % TOTAL_PROPORTION
    table = _channel_table(rng)
    person_n = n[offset < PERSON_PROPORTION]
    auction_n = n[(offset >= PERSON_PROPORTION) & (offset < PERSON_PROPORTION + AUCTION_PROPORTION)]
    bid_n = n[offset >= PERSON_PROPORTION + AUCTION_PROPORTION]
    return Events(
        person=_people(rng, p, person_n),
        auction=_auctions(rng, p, auction_n),
        bid=_bids(rng, p, bid_n, table),
    )


def accounted_sizes(events: Events) -> dict[str, pl.Series]:
    """Each event's size as Nexmark accounts it (8 bytes per number, string lengths)."""
    person = events.person.select(
        8
        + sum(
            pl.col(c).str.len_bytes().cast(pl.Int64)
            for c in ("name", "emailAddress", "creditCard", "city", "state", "extra")
        )
    ).to_series()
    auction = events.auction.select(
        40
        + 8
        + sum(
            pl.col(c).str.len_bytes().cast(pl.Int64) for c in ("itemName", "description", "extra")
        )
    ).to_series()
    bid = events.bid.select(32 + pl.col("extra").str.len_bytes().cast(pl.Int64)).to_series()
    return {"person": person, "auction": auction, "bid": bid}
