"""The source contract, one suite for every connector: positions are JSON, and a reader seeked to
the position after ``k`` records delivers records ``k+1..N`` (another reader of a new source
object, as after a restart, and the same reader rewound). Bad positions are clear errors."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from strom.broker import Broker
from strom.connectors import FileSource, GeneratorSource, KafkaSource, MemorySource, SQLiteTable
from strom.engine.contracts import (
    END_OF_PARTITION,
    JSON,
    Position,
    PositionError,
    Source,
    SourcePartition,
)
from strom.runtime.distributed.repartition import Progress, RepartitionSource, RepartitionWriter
from strom.runtime.distributed.shares import SharedSource

sys.path.insert(0, str(Path(__file__).parents[1] / "connectors"))  # the PostgreSQL fixtures
from postgres_server import postgres_dsn, postgres_server

__all__ = ["postgres_dsn", "postgres_server"]  # the PostgreSQL fixtures, for the "postgres" kind

N = 60
SCHEMA = pl.Schema({"id": pl.Int64(), "k": pl.String()})


def _rows(start: int, stop: int) -> pl.DataFrame:
    return pl.DataFrame({"id": range(start, stop), "k": [f"k{i % 3}" for i in range(start, stop)]},
                        schema=SCHEMA)  # fmt: skip


def _chunks(sizes: tuple[int, ...] = (1, 5, 3, 7, 2, 9, 4)) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    while not out or out[-1][1] < N:
        start = out[-1][1] if out else 0
        out.append((start, min(N, start + sizes[len(out) % len(sizes)])))
    return out


#: (start, stop) of each batch of the partition under test: N records in batches of many sizes
CHUNKS = _chunks()


@dataclass
class Connector:
    """Makes a new source object over the same data (as another process would), whose
    partition ``partition`` holds records 0..N-1 in order."""

    make: Callable[[], Source]
    partition: int = 0
    cuts: int | None = None  # how many cut points to try (None: every one)
    past_end_ok: bool = False  # a count past the end is the end (a table may lose rows)


def _memory() -> Connector:
    items: list[pl.DataFrame | None] = []
    for i, (a, b) in enumerate(CHUNKS):
        items.append(_rows(a, b))
        if i % 3 == 1:
            items.append(None)  # an idle poll is part of the stream too
    other = [_rows(1000, 1010)]
    return Connector(lambda: MemorySource([other, items]), partition=1)


def _generator() -> Connector:
    def generate(p: int, i: int) -> pl.DataFrame | None:
        if i % 4 == 3:
            return None
        a, b = CHUNKS[i - (i + 1) // 4]
        return _rows(a, b) if p == 0 else _rows(1000 + a, 1000 + b)

    batches = next(b for b in range(4 * N) if sum(1 for i in range(b) if i % 4 != 3) == len(CHUNKS))
    return Connector(
        lambda: GeneratorSource(generate, partitions=2, batches=batches, schema=SCHEMA)
    )


def _files(tmp: Path, fmt: str) -> Connector:
    for i, (a, b) in enumerate(CHUNKS):
        frame = _rows(a, b)
        path = tmp / f"part-{2 * i:03d}.{fmt}"  # partition 0 of 2: every even file
        other = tmp / f"part-{2 * i + 1:03d}.{fmt}"
        for f, p in ((frame, path), (_rows(1000 + a, 1000 + b), other)):
            getattr(f, f"write_{fmt}")(p)
    return Connector(lambda: FileSource(str(tmp / f"*.{fmt}"), fmt, partitions=2))  # type: ignore[arg-type]


def _topic(bootstrap: str, partitions: int) -> str:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(15)
    return topic


def _kafka(broker: Broker, client: str) -> Connector:
    bootstrap = broker.bootstrap_servers
    topic = _topic(bootstrap, 2)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(N):
        producer.produce(topic, json.dumps({"id": i, "k": f"k{i % 3}"}).encode(), partition=1)
        producer.produce(topic, json.dumps({"id": 1000 + i, "k": "x"}).encode(), partition=0)
    assert producer.flush(15) == 0

    def make() -> Source:
        return KafkaSource(bootstrap, topic, schema=SCHEMA, bounded=True, client=client,  # type: ignore[arg-type]
                           max_batch_records=7, poll_timeout_ms=20)  # fmt: skip

    return Connector(make, partition=1, cuts=4)


def _repartition(broker: Broker) -> Connector:
    bootstrap = broker.bootstrap_servers
    topic = _topic(bootstrap, 1)
    writer = RepartitionWriter(bootstrap, topic, ["k"], 1, writer=0, run_id="run")
    writer.open()
    for a, b in CHUNKS:
        writer.write(_rows(a, b))
        writer.progress(Progress(watermark=a))
    writer.progress(Progress(ended=True))
    writer.close()
    return Connector(
        lambda: RepartitionSource(
            bootstrap, topic, [0], writers=1, run_id="run", schema=SCHEMA, group_id="g"
        ),
        cuts=4,
    )


def _shared() -> Connector:
    """A worker's share of a source (worker 1 of 2 reads its partition 1 as its partition 0)."""

    def make() -> Source:
        inner = MemorySource([[_rows(1000, 1010)], [_rows(a, b) for a, b in CHUNKS]])
        return SharedSource(inner, [1], None, lambda *_: None)

    return Connector(make)


def _sqlite(tmp: Path) -> Connector:
    """A table whose rows were inserted out of key order: the source reads them by key."""
    import sqlite3

    path = tmp / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT)")
        rows = _rows(0, N).sample(fraction=1.0, shuffle=True, seed=3).rows()
        conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    conn.close()
    return Connector(lambda: SQLiteTable(path, "t", key="id", batch_rows=7), past_end_ok=True)


def _postgres(dsn: str) -> Connector:
    import psycopg

    from strom.connectors import PostgresTable

    table = f"contract_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigint, k text)")  # no key: ctid breaks ties
        rows = _rows(0, N).sample(fraction=1.0, shuffle=True, seed=3).rows()
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", rows)
    return Connector(lambda: PostgresTable(dsn, table, key="id", batch_rows=7), past_end_ok=True)


KINDS = [
    "memory", "generator", "parquet", "csv", "ndjson",
    "kafka-strom", "kafka-librdkafka", "repartition", "worker-share", "sqlite", "postgres",
]  # fmt: skip


@pytest.fixture(params=KINDS)
def connector(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connector]:
    kind = request.param
    if kind.startswith("kafka") or kind == "repartition":
        with Broker(tmp_path / "broker") as broker:
            yield _repartition(broker) if kind == "repartition" else _kafka(broker, kind[6:])
        return
    if kind in ("parquet", "csv", "ndjson"):
        yield _files(tmp_path, kind)
    elif kind == "sqlite":
        yield _sqlite(tmp_path)
    elif kind == "postgres":
        yield _postgres(request.getfixturevalue("postgres_dsn"))
    else:
        yield {"memory": _memory, "generator": _generator, "worker-share": _shared}[kind]()


def _read(reader: SourcePartition) -> tuple[list[list[int]], list[Position]]:
    """Every poll's record ids until the end, and the position before the first and after each."""
    batches: list[list[int]] = []
    positions = [reader.position()]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        item = reader.poll()
        if item is END_OF_PARTITION:
            return batches, positions
        if item is None:  # nothing yet (polls never wait): a poll that delivers nothing moves
            time.sleep(0.001)  # no position, so it is not recorded
            continue
        batches.append(item.get_column("id").to_list())
        positions.append(reader.position())
    raise AssertionError("the partition never ended")


def _json(position: Position) -> Position:
    text = json.dumps(position, allow_nan=False)  # a position is JSON, as checkpoints store it
    restored: Position = json.loads(text)
    assert restored == position
    return restored


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def _cuts(count: int, wanted: int | None) -> list[int]:
    if wanted is None or count <= wanted:
        return list(range(count))
    return sorted({0, 1, count // 2, count - 1} | {count * i // wanted for i in range(wanted)})


def test_seeking_to_the_position_after_k_records_delivers_the_rest(connector: Connector) -> None:
    source = connector.make()
    reader = source.open_partition(connector.partition)
    batches, positions = _read(reader)
    assert _flat(batches) == list(range(N))
    cuts = _cuts(len(positions), connector.cuts)
    for k in cuts:  # another reader, of a new source object: a restarted run
        again = connector.make()
        fresh = again.open_partition(connector.partition)
        fresh.seek(_json(positions[k]))
        assert fresh.position() == positions[k]
        rest, _ = _read(fresh)
        assert _flat(rest) == _flat(batches[k:]), f"after position {k}: {positions[k]}"
        again.close()
    k = cuts[len(cuts) // 2]
    reader.seek(positions[k])  # the same reader, rewound
    rest, _ = _read(reader)
    assert _flat(rest) == _flat(batches[k:])
    source.close()
    source.close()  # idempotent


def _bumped(position: JSON) -> JSON:
    """Every integer of ``position`` far beyond anything the partition holds."""
    if isinstance(position, bool) or position is None:
        return position
    if isinstance(position, int):
        return position + 1_000_000
    if isinstance(position, dict):
        return {k: _bumped(v) for k, v in position.items()}
    return position


def test_bad_positions_are_clear_errors(connector: Connector) -> None:
    source = connector.make()
    reader = source.open_partition(connector.partition)
    _, positions = _read(reader)
    for malformed in ({"nope": 1}, {}, {**positions[-1], **{k: "x" for k in positions[-1]}}):
        with pytest.raises(PositionError, match="position"):
            reader.seek(malformed)
    if connector.past_end_ok:
        reader.seek(_bumped(dict(positions[-1])))  # type: ignore[arg-type]
        assert reader.poll() is END_OF_PARTITION
    else:
        with pytest.raises(PositionError, match=r"out of range|outside"):
            reader.seek(_bumped(dict(positions[-1])))  # type: ignore[arg-type]
    reader.seek(positions[0])  # a failed seek leaves the reader usable
    batches, _ = _read(reader)
    assert _flat(batches) == list(range(N))
    source.close()


def test_a_refused_seek_leaves_the_reader_where_it_was(connector: Connector) -> None:
    source = connector.make()
    reader = source.open_partition(connector.partition)
    batches, positions = _read(reader)
    k = min(1, len(positions) - 1)
    reader.seek(positions[k])
    for key in positions[k]:  # one field at a time: of the wrong type, or a list of junk
        for junk in (True, "x", [["x", 0, 0]]):
            if type(junk) is type(positions[k][key]):
                continue  # a bool field may well be True
            with pytest.raises(PositionError):
                reader.seek({**positions[k], key: junk})
    assert reader.position() == positions[k]
    rest, _ = _read(reader)
    assert _flat(rest) == _flat(batches[k:])
    source.close()


def test_a_file_set_that_changed_is_refused(tmp_path: Path) -> None:
    connector = _files(tmp_path, "parquet")
    reader = connector.make().open_partition(0)
    reader.poll()
    reader.poll()
    position = reader.position()
    _rows(0, 1).write_parquet(tmp_path / "part-000a.parquet")  # sorts before the second file
    moved = connector.make().open_partition(0)
    with pytest.raises(PositionError, match="set of files changed"):
        moved.seek(position)
