"""strom's own Kafka fetcher: the record-batch kernel, the wire client, and the source on it."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from pathlib import Path

import crc32c
import polars as pl
import pytest
from connector_helpers import Sent, create_topic, produce
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strom.broker import Broker
from strom.connectors import KafkaConnectorError, KafkaSource, MemorySink
from strom.connectors.kafka.native_records import decode_fetched
from strom.connectors.kafka.native_wire import APIS, negotiate
from strom.kafka.protocol.records import (
    CorruptRecordError,
    Record,
    build_batch,
    build_control_batch,
    decode_records,
)
from strom.pipeline import END_OF_PARTITION, Pipeline
from strom.runtime import StreamingExecutor

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

# -- the kernel ----------------------------------------------------------------------------

records_strategy = st.lists(
    st.builds(
        Record,
        timestamp=st.integers(0, 1 << 42),
        key=st.none() | st.binary(max_size=40),
        value=st.none() | st.binary(max_size=300),
        headers=st.lists(
            st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3
        ),
    ),
    min_size=1,
    max_size=40,
)


def _reference(buf: bytes) -> list[tuple[object, ...]]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in decode_records(buf)]


def _kernel(buf: bytes) -> list[tuple[object, ...]]:
    c = decode_fetched(buf).columns
    return list(
        zip(
            c.offsets.tolist(),
            c.timestamps.tolist(),
            c.key_array().to_pylist(),
            c.value_array().to_pylist(),
            [h or [] for h in c.header_lists()],
            strict=True,
        )
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.tuples(records_strategy, st.sampled_from(CODECS)), min_size=1, max_size=4),
    cut=st.integers(0, 200),
)
def test_kernel_equals_the_reference_parser(
    batches: list[tuple[list[Record], str]], cut: int
) -> None:
    buf = b""
    offset = 0
    for records, codec in batches:
        buf += build_batch(records, base_offset=offset, compression=codec)
        offset += len(records) + 3  # gaps between batches, as after compaction
    buf += build_control_batch(1, 0, commit=True, base_offset=offset)  # skipped, but counted
    assert _kernel(buf) == _reference(buf)
    assert decode_fetched(buf).next_offset == offset + 1
    truncated = buf[: max(0, len(buf) - cut)]  # a fetch response cut inside its last batch
    assert _kernel(truncated) == _reference(truncated)


def test_json_values_are_newline_separated_text() -> None:
    buf = build_batch([Record(value=b'{"a": 1}'), Record(value=b'{"a": 2}')])
    columns = decode_fetched(buf).columns
    assert columns.ndjson() == b'{"a": 1}\n{"a": 2}\n'
    assert columns.value_list() == [b'{"a": 1}', b'{"a": 2}']
    assert columns.slice(1, 2).ndjson() == b'{"a": 2}\n'


def _with_crc(batch: bytearray) -> bytes:
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch)


def test_malformed_batches_raise_clear_errors() -> None:
    good = build_batch([Record(key=b"k", value=b"v" * 20) for _ in range(3)], base_offset=7)
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="offset 7 fails its CRC-32C"):
        decode_fetched(bytes(flipped))
    bad_varint = bytearray(good)
    bad_varint[61:67] = b"\xff" * 6  # the first record's length: a varint that never ends
    with pytest.raises(CorruptRecordError, match="offset 7, record 0: varint too long"):
        decode_fetched(_with_crc(bad_varint))
    long_key = bytearray(good)
    long_key[61 + 4] = 0x7E  # the first record's key length: 63 bytes, past its end
    with pytest.raises(CorruptRecordError, match="record 0: invalid key length"):
        decode_fetched(_with_crc(long_key))
    too_many = bytearray(good)
    struct.pack_into(">i", too_many, 57, 4)  # records_count 4, but 3 records follow
    with pytest.raises(CorruptRecordError, match="fewer records than"):
        decode_fetched(_with_crc(too_many))
    huge = bytearray(good)
    struct.pack_into(">i", huge, 57, 1 << 30)  # would allocate gigabytes if believed
    with pytest.raises(CorruptRecordError, match="claims 1073741824 records"):
        decode_fetched(_with_crc(huge))
    assert len(decode_fetched(good[:-1]).columns) == 0  # a partial batch is no error
    assert decode_fetched(good[:-1]).next_offset is None


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_kernel_never_crashes_on_garbage(data: st.DataObject) -> None:
    records = [Record(key=b"k" * i, value=b"v" * (i * 7), headers=[("h", b"x")]) for i in range(5)]
    buf = bytearray(build_batch(records))
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(61, len(buf) - 1))] = data.draw(st.integers(0, 255))
    try:
        columns = decode_fetched(bytes(buf), check_crc=False).columns
    except CorruptRecordError:
        return
    assert len(columns) <= 5


def test_fetch_size_holds_about_one_micro_batch() -> None:
    from strom.connectors.kafka.native_fetch import fetch_size

    assert fetch_size(1 << 20, 50 << 20, 10_000, 3_000_000, 20_000) == 1_500_000
    assert fetch_size(1 << 20, 50 << 20, 10_000, 3_000, 2_000) == 1 << 20  # small records
    assert fetch_size(1 << 20, 50 << 20, 100_000, 1 << 20, 10) == 50 << 20  # large records
    assert fetch_size(1 << 20, 50 << 20, 10_000, 0, 0) == 1 << 20


def test_version_negotiation_is_the_highest_common_version() -> None:
    fetch = APIS["Fetch"]
    assert negotiate(fetch, (0, 17)) == 12
    assert negotiate(fetch, (4, 11)) == 11
    assert negotiate(fetch, (13, 17)) is None
    assert negotiate(fetch, None) is None


# -- the source on strom's client --------------------------------------------------------------


def _read(source: KafkaSource) -> pl.DataFrame:
    p = Pipeline()
    p.source(source).sink(sink := MemorySink())
    StreamingExecutor(p).run()
    return sink.to_frame().sort("_partition", "_offset")


def _kafka_python_produce(bootstrap: str, topic: str, codec: str, n: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec
    )
    for i in range(n):
        producer.send(topic, key=f"k{i}".encode(), value=f"kp-{codec}-{i}".encode(), partition=1)
    producer.flush(15)
    producer.close()


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_from_three_producers(strom_broker: Broker, codec: str) -> None:
    bootstrap = strom_broker.bootstrap_servers
    topic = f"codec-{codec}"
    create_topic(bootstrap, topic, 3)
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec})
    sent = []
    for i in range(300):
        key = None if i % 4 == 0 else f"key{i}".encode()
        headers = [("n", str(i).encode()), ("empty", b"")] if i % 3 == 0 else None
        value = f"ck-{codec}-{i}".encode() * (1 + i % 5)
        producer.produce(topic, value=value, key=key, partition=0, headers=headers)
        sent.append((key, value, headers))
    assert producer.flush(15) == 0
    _kafka_python_produce(bootstrap, topic, codec, 200)
    kcat = subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", "2", "-z", codec, "-K", ":"],
        input="".join(f"kc{i}:kcat-{codec}-{i}\n" for i in range(150)).encode(),
        capture_output=True,
        timeout=30,
    )
    assert kcat.returncode == 0, kcat.stderr

    got = _read(KafkaSource(bootstrap, topic, value_format="raw", bounded=True, headers=True))
    by_part = got.partition_by("_partition", as_dict=True)
    p0 = by_part[(0,)]
    assert p0["_offset"].to_list() == list(range(300))
    assert list(zip(p0["_key"].to_list(), p0["value"].to_list(), strict=True)) == [
        (k, v) for k, v, _ in sent
    ]
    headers = [
        [(h["key"], h["value"]) for h in hs] if hs else None for hs in p0["_headers"].to_list()
    ]
    assert headers == [h for _, _, h in sent]
    p1 = by_part[(1,)]
    assert p1["value"].to_list() == [f"kp-{codec}-{i}".encode() for i in range(200)]
    assert p1["_key"].to_list() == [f"k{i}".encode() for i in range(200)]
    p2 = by_part[(2,)]
    assert p2["value"].to_list() == [f"kcat-{codec}-{i}".encode() for i in range(150)]
    assert p2["_key"].to_list() == [f"kc{i}".encode() for i in range(150)]


def test_four_partitions_many_batches_and_split_batches(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "wide", 4)
    sent = [
        Sent(i % 4, json.dumps({"n": i, "pad": "x" * (i % 50)}).encode(), timestamp=1_000 + i)
        for i in range(6_000)
    ]
    produce(bootstrap, "wide", sent)
    for config in (
        {},  # whole batches per fetch
        {"max.partition.fetch.bytes": 3_000},  # responses end inside a batch
        {"max.partition.fetch.bytes": 50},  # no batch fits: the fetch size grows
    ):
        source = KafkaSource(
            bootstrap,
            "wide",
            schema={"n": pl.Int64},
            bounded=True,
            consumer_config=config,
            max_batch_records=500,
        )
        got = _read(source)
        assert sorted(got["n"].to_list()) == list(range(6_000)), config
        assert got.filter(pl.col("_partition") == 3)["_timestamp"].to_list() == [
            1_000 + i for i in range(3, 6_000, 4)
        ]
        assert source.positions() == dict.fromkeys(range(4), 1_500)


def test_native_client_rejects_librdkafka_settings(strom_broker: Broker) -> None:
    with pytest.raises(ValueError, match="needs client='librdkafka'"):
        KafkaSource("x:1", "t", schema={"n": pl.Int64}, consumer_config={"sasl.mechanism": "x"})
    with pytest.raises(ValueError, match="client must be"):
        KafkaSource("x:1", "t", schema={"n": pl.Int64}, client="java")  # type: ignore[arg-type]


def test_offset_out_of_range_resets_to_earliest(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "oor", 1)
    produce(bootstrap, "oor", [Sent(0, json.dumps({"n": i}).encode()) for i in range(5)])
    source = KafkaSource(bootstrap, "oor", schema={"n": pl.Int64}, poll_timeout_ms=50)
    reader = source.open_partition(0)
    state = source._fetcher.states[0]
    state.fetched = state.position = 1_000  # beyond the log end
    got: list[int] = []
    for _ in range(200):
        item = reader.poll()
        if isinstance(item, pl.DataFrame):
            got += item["n"].to_list()
        if len(got) >= 5:
            break
        source.wait(0.05)  # polls never wait; the source does, for all its partitions
    assert got == [0, 1, 2, 3, 4]
    source.close()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_broker_restart_mid_read_loses_and_repeats_nothing(tmp_path: Path) -> None:
    port = _port()
    data = tmp_path / "data"
    broker = Broker(data, port=port).start()
    try:
        bootstrap = broker.bootstrap_servers
        create_topic(bootstrap, "restart", 2)
        produce(
            bootstrap, "restart", [Sent(i % 2, json.dumps({"n": i}).encode()) for i in range(400)]
        )
        source = KafkaSource(
            bootstrap, "restart", schema={"n": pl.Int64}, poll_timeout_ms=50, max_batch_records=50
        )
        readers = [source.open_partition(p) for p in range(2)]
        got: list[int] = []

        def poll_until(count: int) -> None:
            for _ in range(2_000):
                for reader in readers:
                    item = reader.poll()
                    assert item is not END_OF_PARTITION
                    if isinstance(item, pl.DataFrame):
                        got.extend(item["n"].to_list())
                if len(got) >= count:
                    return
                source.wait(0.05)
            raise AssertionError(f"read {len(got)} of {count}")

        poll_until(100)
        broker.stop()
        for _ in range(3):  # the broker is down: polls deliver what was buffered, no error
            for reader in readers:
                item = reader.poll()
                assert item is not END_OF_PARTITION
                if isinstance(item, pl.DataFrame):
                    got.extend(item["n"].to_list())
        broker = Broker(data, port=port).start()
        produce(
            bootstrap,
            "restart",
            [Sent(i % 2, json.dumps({"n": i}).encode()) for i in range(400, 600)],
        )
        poll_until(600)
        assert sorted(got) == list(range(600))
        assert source.positions() == {0: 300, 1: 300}
        source.close()
    finally:
        broker.stop()


def test_kernel_compiles_without_a_writable_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba.core import caching

    from strom.connectors.kafka import kernels

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])  # nowhere to write
    with pytest.raises(RuntimeError, match="no locator"):
        caching.FunctionCache(_plus_one)
    assert kernels.jit(_plus_one)(1) == 2


def _plus_one(x: int) -> int:
    return x + 1


def test_stale_leader_refreshes_metadata_and_reads_on(strom_broker: Broker) -> None:
    bootstrap = strom_broker.bootstrap_servers
    create_topic(bootstrap, "moved", 1)
    produce(bootstrap, "moved", [Sent(0, json.dumps({"n": i}).encode()) for i in range(20)])
    source = KafkaSource(bootstrap, "moved", schema={"n": pl.Int64}, bounded=True)
    reader = source.open_partition(0)
    fetcher = source._fetcher
    state = fetcher.states[0]
    fetcher._on_partition(0, state, {"error_code": 6, "records": None})  # NOT_LEADER_OR_FOLLOWER
    assert fetcher._stale
    fetcher.cluster.leaders[0] = -1  # as if metadata had named no leader
    got: list[int] = []
    while (item := reader.poll()) is not END_OF_PARTITION:
        if isinstance(item, pl.DataFrame):
            got += item["n"].to_list()
    assert got == list(range(20))


def test_a_corrupt_batch_on_disk_is_a_clear_error(tmp_path: Path) -> None:
    with Broker(tmp_path / "data") as broker:
        bootstrap = broker.bootstrap_servers
        create_topic(bootstrap, "rot", 1)
        produce(bootstrap, "rot", [Sent(0, b'{"n": 12345}')])
        [segment] = [p for p in (tmp_path / "data").rglob("*.log") if "rot" in str(p)]
        data = bytearray(segment.read_bytes())
        at = data.index(b"12345")
        data[at] = ord("9")  # a flipped byte inside the value: the CRC no longer matches
        segment.write_bytes(bytes(data))
        source = KafkaSource(bootstrap, "rot", schema={"n": pl.Int64}, bounded=True)
        with pytest.raises(KafkaConnectorError, match=r"'rot' partition 0: .*CRC-32C"):
            source.scan_partition(0)


# -- the compiled JSON fast path ---------------------------------------------------------------

FLAT_SCHEMA = pl.Schema(
    {"a": pl.Int64(), "s": pl.String(), "b": pl.Int64(), "f": pl.Float64(), "t": pl.Boolean()}
)
_space = st.sampled_from(["", " ", "\t", "\r", "  ", "\n", "\f"])


@st.composite
def _number(draw: st.DrawFn) -> str:
    """JSON numbers of every shape: a point anywhere in the digits, an optional exponent."""
    digits = str(draw(st.integers(0, 10**20)))
    point = draw(st.integers(0, len(digits)))
    text = digits if point in (0, len(digits)) else digits[:point] + "." + digits[point:]
    if draw(st.booleans()):
        text += draw(st.sampled_from(["e", "E", "e+", "e-", "E-"])) + str(draw(st.integers(0, 400)))
    return ("-" if draw(st.booleans()) else "") + text


_json_value = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    _number(),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(
        [
            "null",
            "true",
            "false",
            "1.5",
            "1e3",
            "-0",
            "007",
            "-",
            "[1]",
            '{"z": 1}',
            "1.",
            ".5",
            "1e",
            "-0.0",
            "nul",
            "tru",
            "True",
            '"\\u00e9"',
        ]
    ),
    st.text(max_size=12).map(json.dumps),
    st.text(max_size=12).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12).map(
        lambda t: '"' + t + '"'  # unescaped: sometimes invalid JSON
    ),
)
_member = st.tuples(
    st.sampled_from(["a", "s", "b", "f", "t", "x", "A", "y"]), _json_value, _space, _space
)


# up to 40 characters: the parser takes strings eight bytes per step, then byte by byte
_plain_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_plain_int = st.integers(-(10**18) + 1, 10**18 - 1).map(str)
_plain_member = st.one_of(
    st.tuples(st.sampled_from(["a", "b"]), _plain_int),
    st.tuples(st.just("s"), _plain_text.map(json.dumps)),
    st.tuples(st.just("f"), st.one_of(_number(), _plain_int)),
    st.tuples(st.just("t"), st.sampled_from(["true", "false"])),
    st.tuples(st.sampled_from(["a", "s", "b", "f", "t"]), st.just("null")),
    st.tuples(  # keys outside the schema, which Polars ignores
        st.sampled_from(["x", "y", "A", "url", "aa", "sa", ""]),  # "aa": "a" is expected first
        st.one_of(
            _plain_int, _plain_text.map(json.dumps), st.sampled_from(["null", "true", "false"])
        ),
    ),
).map(lambda kv: (kv[0], kv[1], " ", ""))


@st.composite
def _flat_values(draw: st.DrawFn) -> bytes:
    """Mostly values the fast path takes (distinct schema keys, other keys perhaps repeated,
    plain values), else anything."""
    if draw(st.integers(0, 3)):
        plain = draw(st.lists(_plain_member))
        distinct = {(m[0] if m[0] in FLAT_SCHEMA else i): m for i, m in enumerate(plain)}
        members = list(distinct.values())
    else:
        members = draw(st.lists(_member, max_size=5))
    body = ",".join(f'{sp1}"{key}"{sp2}:{sp1}{value}{sp2}' for key, value, sp1, sp2 in members)
    text = draw(_space) + "{" + body + "}" + draw(_space)
    if draw(st.integers(0, 20)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # cut short
    return text.encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(_flat_values(), min_size=1, max_size=6))
def test_flat_json_fast_path_equals_polars_whenever_it_answers(values: list[bytes]) -> None:
    from strom.connectors.kafka.native_json import FlatJsonSchema, parse_flat

    flat = FlatJsonSchema.of(FLAT_SCHEMA)
    assert flat is not None
    columns = decode_fetched(build_batch([Record(value=v) for v in values])).columns
    fast = parse_flat(columns, flat)
    if fast is None:
        return
    reference = pl.read_ndjson(b"\n".join(values), schema=FLAT_SCHEMA)
    assert fast.schema == FLAT_SCHEMA
    assert fast.to_dicts() == reference.to_dicts()


def test_flat_json_fast_path_takes_plain_values_and_declines_the_rest() -> None:
    from strom.connectors.kafka.native_json import FlatJsonSchema, parse_flat

    flat = FlatJsonSchema.of(FLAT_SCHEMA)
    assert flat is not None and FlatJsonSchema.of(pl.Schema({"d": pl.Date()})) is None

    def fast(*values: bytes) -> pl.DataFrame | None:
        return parse_flat(
            decode_fetched(build_batch([Record(value=v) for v in values])).columns, flat
        )

    got = fast(
        b'{"a": 1, "s": "x", "f": 2, "t": true}',
        b' {"b":-7 , "s":null, "x": "skipped", "y": null, "z": false, "f": -1.25e1}',
        b'{"f": 0.5, "t": false, "x": 12}',
    )
    assert got is not None
    assert got.rows() == [
        (1, "x", None, 2.0, True),
        (None, None, -7, -12.5, None),
        (None, None, None, 0.5, False),
    ]
    declined_values = (
        b'{"a": 1.0}', b'{"s": "\\n"}', b'{"x": [1]}', b'{"x": 1.5}', b'{"a": 1, "a": 2}',
        b"[1]", b'{"t": 1}', b'{"f": 0.12345678901234567}',
    )  # fmt: skip
    for declined in declined_values:
        assert fast(b'{"a": 1}', declined) is None, declined


@pytest.mark.parametrize(
    "stopper", ['\\"', "\\n", "\\u0041", "\x7f", "\u00e9", "\x01", "\t"], ids=repr
)
def test_flat_json_strings_end_the_fast_path_at_any_position(stopper: str) -> None:
    """A byte the word-at-a-time scan must stop at, at every position of strings of every
    length around the word size: the fast path declines the chunk or equals Polars; the same
    strings without it parse exactly."""
    from strom.connectors.kafka.native_json import FlatJsonSchema, parse_flat

    flat = FlatJsonSchema.of(FLAT_SCHEMA)
    assert flat is not None
    for length in range(0, 26):
        plain = "".join(chr(33 + (i * 7) % 90) for i in range(length)).replace('"', "#")
        plain = plain.replace("\\", "/")
        values = [f'{{"s": "{plain}", "a": {length}}}'.encode()]
        for at in range(length + 1):
            text = plain[:at] + stopper + plain[at:]
            values.append(f'{{"a": {at}, "s": "{text}"}}'.encode())
        columns = decode_fetched(build_batch([Record(value=v) for v in values])).columns
        fast = parse_flat(columns, flat)
        try:
            reference = pl.read_ndjson(b"\n".join(values), schema=FLAT_SCHEMA)
        except pl.exceptions.ComputeError:  # a raw control character: not JSON
            assert fast is None
        else:
            assert fast is None or fast.to_dicts() == reference.to_dicts()
        alone = decode_fetched(build_batch([Record(value=values[0])])).columns
        got = parse_flat(alone, flat)
        assert got is not None and got["s"].to_list() == [plain]


def test_flat_json_parses_in_halves_when_string_scratch_would_be_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from strom.connectors.kafka import native_json as json_columns

    flat = json_columns.FlatJsonSchema.of(FLAT_SCHEMA)
    assert flat is not None
    values = [json.dumps({"a": i, "s": "x" * (i % 50), "b": -i}).encode() for i in range(300)]
    columns = decode_fetched(build_batch([Record(value=v) for v in values])).columns
    whole = json_columns.parse_flat(columns, flat)
    assert whole is not None
    monkeypatch.setattr(json_columns, "SCRATCH_BYTES", 2_000)  # about 50 values at a time
    halves = json_columns.parse_flat(columns, flat)
    assert halves is not None and halves.equals(whole)
    monkeypatch.setattr(json_columns, "SCRATCH_BYTES", 10)  # not even one value: Polars' turn
    assert json_columns.parse_flat(columns, flat) is None
