"""A round's chunks of several partitions decoded in one parse (KafkaSource on strom's client):
the same batches, positions and dead letters as decoding each partition alone."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from connector_helpers import Sent, create_topic, produce

from strom.broker import Broker
from strom.connectors import KafkaSource, MemorySink
from strom.connectors.kafka import source as source_module
from strom.connectors.kafka.batch import BatchDecoder
from strom.connectors.kafka.native_records import decode_fetched
from strom.engine.contracts import END_OF_PARTITION, PollResult

PARTITIONS = 3


def _sent(bad: set[int] = frozenset()) -> list[Sent]:  # type: ignore[assignment]
    out = []
    for i in range(60):
        value = b"not json" if i in bad else json.dumps({"n": i, "s": f"v{i}"}).encode()
        out.append(Sent(i % PARTITIONS, value, key=f"k{i}".encode(), timestamp=5_000 + i))
    return out


def _source(bootstrap: str, topic: str, dead: MemorySink) -> KafkaSource:
    return KafkaSource(
        bootstrap,
        topic,
        schema={"n": pl.Int64, "s": pl.String},
        bounded=True,
        dead_letter=dead,
        max_batch_records=7,  # several chunks a partition
    )


def _rounds(source: KafkaSource) -> list[list[tuple[int, pl.DataFrame]]]:
    """Poll every partition once a round, in order (as the executor does), until all ended;
    the batches of each round and the positions seen after each poll."""
    readers = [source.open_partition(p) for p in range(PARTITIONS)]
    ended: set[int] = set()
    rounds = []
    while len(ended) < PARTITIONS:
        batches = []
        for p, reader in enumerate(readers):
            if p in ended:
                continue
            item: PollResult = reader.poll()
            if item is END_OF_PARTITION:
                ended.add(p)
            elif item is not None and item.height:
                batches.append((p, item))
        rounds.append(batches)
    return rounds


def _by_partition(rounds: list[list[tuple[int, pl.DataFrame]]]) -> dict[int, pl.DataFrame]:
    frames: dict[int, list[pl.DataFrame]] = {}
    for batches in rounds:
        for p, batch in batches:
            frames.setdefault(p, []).append(batch)
    return {p: pl.concat(fs) for p, fs in sorted(frames.items())}


@pytest.mark.parametrize("bad", [set(), {4, 31}], ids=["clean", "two-bad-values"])
def test_round_decoding_gives_what_decoding_alone_gives(
    strom_broker: Broker, monkeypatch: pytest.MonkeyPatch, bad: set[int]
) -> None:
    bootstrap = strom_broker.bootstrap_servers
    topic = f"rounds-{len(bad)}"
    create_topic(bootstrap, topic, PARTITIONS)
    produce(bootstrap, topic, _sent(bad))

    merged_dead = MemorySink()
    merged = _source(bootstrap, topic, merged_dead)
    merged_rounds = _rounds(merged)
    merged_positions = merged.positions()
    merged.close()

    monkeypatch.setattr(source_module, "ROUND_DECODE_BYTES", 0)  # every chunk alone
    alone_dead = MemorySink()
    alone = _source(bootstrap, topic, alone_dead)
    alone_frames = _by_partition(_rounds(alone))

    assert _by_partition(merged_rounds).keys() == alone_frames.keys()
    for p, frame in _by_partition(merged_rounds).items():
        assert frame.equals(alone_frames[p]), p
        assert frame["_partition"].unique().to_list() == [p]
    assert sorted(n for f in alone_frames.values() for n in f["n"]) == sorted(set(range(60)) - bad)
    assert merged_positions == alone.positions() == dict.fromkeys(range(PARTITIONS), 20)
    dead = merged_dead.to_frame()
    if bad:
        assert sorted(dead["offset"].to_list()) == sorted(i // PARTITIONS for i in bad)
        assert sorted(dead["partition"].to_list()) == sorted(i % PARTITIONS for i in bad)
        assert dead.sort("offset").equals(alone_dead.to_frame().sort("offset"))
    else:
        assert dead.height == alone_dead.to_frame().height == 0
    # the rounds did decode several partitions together: batches of one round, one parse
    assert any(len(batches) > 1 for batches in merged_rounds)


def test_a_chunk_decoded_ahead_is_not_yet_delivered(strom_broker: Broker) -> None:
    """Another partition's chunk, decoded with the polled one's, moves no position until its
    partition is polled; a seek drops it."""
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "ahead", PARTITIONS)
    produce(bootstrap, "ahead", _sent())
    source = _source(bootstrap, "ahead", MemorySink())
    readers = [source.open_partition(p) for p in range(PARTITIONS)]
    first = None
    while first is None:
        item = readers[0].poll()
        first = item if item is not END_OF_PARTITION and item is not None else None
    assert source.positions() == {0: 7, 1: 0, 2: 0}
    assert source._decoded, "the other partitions' chunks were decoded with partition 0's"
    assert source.wait(0.0)  # a decoded chunk is data ready now
    readers[1].seek({"offset": 3})
    second = readers[1].poll()
    while second is None:
        second = readers[1].poll()
    assert second is not END_OF_PARTITION
    assert second["_offset"].to_list()[0] == 3  # from the seek, not the chunk decoded ahead
    third = readers[2].poll()
    assert third is not None and third is not END_OF_PARTITION
    assert third["_offset"].to_list() == list(range(7))
    assert source.positions() == {0: 7, 1: 3 + second.height, 2: 7}
    source.close()


def test_a_failed_round_decode_puts_every_chunk_back(
    strom_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round's decode that raises leaves every partition's chunk where it was: polling on
    delivers each record once (none skipped by a position that moved past a lost chunk)."""
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "fails-once", PARTITIONS)
    produce(bootstrap, "fails-once", _sent())
    source = _source(bootstrap, "fails-once", MemorySink())
    real = BatchDecoder.decode_round
    calls = []

    def fails_once(self: BatchDecoder, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BatchDecoder, "decode_round", fails_once)
    readers = [source.open_partition(p) for p in range(PARTITIONS)]
    with pytest.raises(RuntimeError, match="injected"):
        while True:
            readers[0].poll()
    assert source.positions() == dict.fromkeys(range(PARTITIONS), 0)
    assert not source._decoded
    got: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    ended: set[int] = set()
    while len(ended) < PARTITIONS:
        for p, reader in enumerate(readers):
            if p in ended:
                continue
            item = reader.poll()
            if item is END_OF_PARTITION:
                ended.add(p)
            elif item is not None:
                got[p].extend(item["_offset"].to_list())
    assert got == {p: list(range(20)) for p in range(PARTITIONS)}
    assert len(calls) > 1


def test_reopening_a_partition_drops_what_was_decoded_ahead(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "reopen", PARTITIONS)
    produce(bootstrap, "reopen", _sent())
    source = _source(bootstrap, "reopen", MemorySink())
    readers = [source.open_partition(p) for p in range(PARTITIONS)]
    while readers[0].poll() is None:
        pass
    assert set(source._decoded) == {1, 2}
    reopened = source.open_partition(1)
    assert set(source._decoded) == {2}
    first = reopened.poll()
    while first is None:
        first = reopened.poll()
    assert first is not END_OF_PARTITION and first["_offset"].to_list()[0] == 0
    source.close()


def test_one_partition_given_as_a_numpy_integer() -> None:
    from strom.kafka.protocol.records import Record, build_batch

    columns = decode_fetched(build_batch([Record(value=b'{"n": 1, "s": "a"}')])).columns
    decoder = BatchDecoder("json", pl.Schema({"n": pl.Int64, "s": pl.String}), ["n"], False)
    rows, dead = decoder.decode_columns("t", np.int64(2), columns)  # type: ignore[arg-type]
    assert dead is None and rows is not None and rows["_partition"].to_list() == [2]
