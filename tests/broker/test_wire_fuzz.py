"""Wire fuzzing: malformed requests for every API and version the broker registers.

One long-lived in-process broker takes hypothesis-generated input over real sockets. For each
registered (API, version), a structurally valid request is generated from Kafka's own message
spec (every field filled, one element per array, a real record batch where records go), then
broken: truncated, bit-flipped, overwritten with hostile lengths, extended with garbage, or
replaced by random bytes. Some examples instead fill every field with arbitrary values of its
type (edge integers, odd strings, nulls, empty or repeated arrays, garbage records): they parse,
and test the handlers. Separately, random byte streams (size prefix included) are sent.

Each example is sent on a fresh connection, followed by a valid ApiVersions request, and the
client then half-closes its side. Within a deadline the broker must answer what it can and close
the connection: a hang fails the example. When the ApiVersions answer arrives it must decode
with its own correlation id (the connection stayed in sync); for a well-formed request (intact,
or with arbitrary field values) it must arrive, after that request's own answer. After every
example a separate connection must get correct ApiVersions and Metadata answers, and the
``strom`` loggers must have recorded no exception traceback; the broker thread must be alive at
the end.

Inputs that are valid and legitimately slow are filtered out (``assume``): a Fetch asking to
long-poll for more than a second, and topic creations of more than 64 partitions (each one is a
directory). Examples are derandomized, so every run tries the same inputs.
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from broker_proc import (
    RawClient,
    TracebackRecorder,
    api_versions_ok,
    decode_response,
    request_frame,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from strom.broker import Broker
from strom.broker.handlers import load_handlers
from strom.broker.handlers.base import REGISTRY
from strom.kafka.protocol.codec import DecodeError, codec_for, snake
from strom.kafka.protocol.framing import parse_request_header
from strom.kafka.protocol.records import Record, build_batch
from strom.kafka.protocol.spec import FieldSpec, load

load_handlers()
CASES = sorted(
    (api.key, api.name, v)
    for api in REGISTRY.values()
    for v in range(api.min_version, api.max_version + 1)
)
EXAMPLES_PER_CASE = 16
DEADLINE_S = 20.0  # generous: a hang is forever, and CI machines can be slow
SENTINEL_CORRELATION = 0x5EED
TOPIC = "fuzz-topic"
_GROUPS = itertools.count()
_RECORDS = build_batch([Record(key=b"k", value=b"fuzz")])
_SENTINEL_FRAME = request_frame(
    "ApiVersions", 0, {}, api_key=18, correlation_id=SENTINEL_CORRELATION
)

# Field values that keep a valid request quick and meaningful (by snake_case field name).
_NAMED: dict[str, Any] = {
    "acks": 1,
    "max_wait_ms": 0,
    "min_bytes": 1,
    "timeout_ms": 100,
    "session_timeout_ms": 1000,
    "rebalance_timeout_ms": 1000,
    "transaction_timeout_ms": 60_000,
    "num_partitions": 1,
    "replication_factor": 1,
    "count": 2,
    "partition_index": 0,
    "partition": 0,
    "index": 0,
    "fetch_offset": 0,
    "timestamp": -1,
    "producer_id": -1,
    "producer_epoch": -1,
    "generation_id": -1,
    "generation_id_or_member_epoch": -1,
    "member_id": "",
    "group_instance_id": None,
    "transactional_id": None,
    "resource_type": 2,
    "key_type": 0,
    "isolation_level": 0,
    "max_bytes": 1 << 20,
    "partition_max_bytes": 1 << 20,
}
_STRINGS = {"name": TOPIC, "topic": TOPIC, "resource_name": TOPIC, "protocol_type": "consumer"}
_INTS = {"int8", "int16", "int32", "int64", "uint16", "uint32"}


def _example(fields: tuple[FieldSpec, ...], version: int, group: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if version not in f.versions:
            continue
        key = snake(f.name)
        value = _value(f, f.element_type if f.is_array else f.type, version, key, group)
        out[key] = [value] if f.is_array else value
    return out


def _value(f: FieldSpec, typ: str, version: int, key: str, group: str) -> Any:
    if f.fields:
        return _example(f.fields, version, group)
    # (A null where the field is not nullable, as AddOffsetsToTxn's transactional id, falls
    # through to an ordinary value of its type.)
    if key in _NAMED and not f.is_array and (_NAMED[key] is not None or version in f.nullable):
        return _NAMED[key]
    if typ in _INTS:
        return 0
    if typ == "bool":
        return False
    if typ == "float64":
        return 0.0
    if typ == "uuid":
        return b"\x00" * 16
    if typ == "records":
        return _RECORDS
    if typ == "bytes":
        return b"\x00\x01fuzz"
    if typ == "string":
        if key.endswith("group_id") or key in ("key", "group_id"):
            return group
        return _STRINGS.get(key, "fuzz")
    raise AssertionError(f"no example for type {typ}")


_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
}


def _random_ints(typ: str) -> st.SearchStrategy[int]:
    lo, hi = _RANGES[typ]
    edges = [v for v in (lo, -1, 0, 1, 2, hi) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


@st.composite
def random_fields(
    draw: st.DrawFn, fields: tuple[FieldSpec, ...], version: int, group: str
) -> dict[str, Any]:
    """A request body that encodes fine but holds arbitrary values: hostile to the handlers."""
    out: dict[str, Any] = {}
    for f in fields:
        if version not in f.versions:
            continue
        key = snake(f.name)
        if version in f.nullable and draw(st.integers(0, 5)) == 0:
            out[key] = None
        elif f.is_array:
            size = draw(st.integers(0, 2))
            out[key] = [
                draw(_random_value(f, f.element_type, version, key, group)) for _ in range(size)
            ]
        else:
            out[key] = draw(_random_value(f, f.type, version, key, group))
    return out


def _random_value(
    f: FieldSpec, typ: str, version: int, key: str, group: str
) -> st.SearchStrategy[Any]:
    if f.fields:
        return random_fields(f.fields, version, group)
    if typ in _RANGES:
        return _random_ints(typ)
    if typ == "bool":
        return st.booleans()
    if typ == "float64":
        return st.floats(allow_nan=True)
    if typ == "uuid":
        return st.sampled_from([b"\x00" * 16, b"\xff" * 16])
    if typ == "records":
        return st.one_of(st.just(_RECORDS), st.binary(max_size=80))
    if typ == "bytes":
        return st.binary(max_size=16)
    if typ == "string":
        if key == "group_id":
            # Only this example's group (or none): a JoinGroup into a group where an earlier
            # example left a member waits, legitimately, for that member to rejoin.
            return st.sampled_from([group, ""])
        return st.one_of(
            st.sampled_from([TOPIC, group, "", "consumer", "range"]), st.text(max_size=8)
        )
    raise AssertionError(f"no strategy for type {typ}")


def valid_request(api_key: int, name: str, version: int, group: str) -> bytes:
    body = _example(load(f"{name}Request").fields, version, group)
    return request_frame(name, version, body, api_key=api_key, correlation_id=version + 1)


def _flexible_of(api_key: int, api_version: int) -> bool | None:
    entry = REGISTRY.get(api_key)
    if entry is None or not entry.min_version <= api_version <= entry.max_version:
        return None
    return codec_for(entry.request, api_version).flexible


def legitimately_slow(stream: bytes) -> bool:
    """Whether the broker, decoding the frames of ``stream`` as it will, finds a valid request
    that may take long on purpose: a long-polling Fetch, or a creation of many partitions."""
    while len(stream) >= 4:
        (size,) = struct.unpack_from(">i", stream)
        if size < 0 or size > len(stream) - 4:
            return False
        if _slow_request(stream[4 : 4 + size]):
            return True
        stream = stream[4 + size :]
    return False


def _slow_request(payload: bytes) -> bool:
    try:
        header, reader = parse_request_header(payload, _flexible_of)
        entry = REGISTRY.get(header.api_key)
        if entry is None or not entry.min_version <= header.api_version <= entry.max_version:
            return False
        body = codec_for(entry.request, header.api_version).decode_prefix(reader)
    except DecodeError:
        return False
    if entry.name == "Fetch":
        return bool(body["max_wait_ms"] > 1000)
    if entry.name == "CreateTopics":
        return any(t["num_partitions"] > 64 for t in body["topics"])
    if entry.name == "CreatePartitions":
        return any(t["count"] > 64 for t in body["topics"])
    return False


# -- mutations ----------------------------------------------------------------------------------

_HOSTILE = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\xff\xff\xff\x7f"]


@st.composite
def mutated(draw: st.DrawFn, payload: bytes) -> tuple[str, bytes]:
    """A broken version of a request payload (without its size prefix)."""
    data = bytearray(payload)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "hostile", "append", "body"]))
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "overwrite":
        i = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        data[i : i + len(chunk)] = chunk
    elif kind == "hostile":  # huge, negative or unterminated lengths and varints
        i = draw(st.integers(8, max(len(data) - 1, 8)))
        data[i : i + 4] = draw(st.sampled_from(_HOSTILE))
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    else:  # a valid header (up to the client id) followed by random bytes
        data = data[:8] + draw(st.binary(max_size=200))
    return kind, bytes(data)


# -- the harness --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracebacks() -> Iterator[TracebackRecorder]:
    handler = TracebackRecorder()
    logger = logging.getLogger("strom")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, tracebacks: TracebackRecorder
) -> Iterator[Broker]:
    with Broker(
        tmp_path_factory.mktemp("fuzz") / "data",
        max_request_bytes=1 << 20,
        initial_rebalance_delay_ms=0,
    ) as b:
        yield b
        assert b._thread is not None and b._thread.is_alive(), "the broker thread died"


def exchange(address: tuple[str, int], stream: bytes) -> list[bytes]:
    """Send ``stream`` then a valid ApiVersions request, half-close, and read response frames
    until the broker closes the connection; fail if that takes longer than the deadline."""
    frames: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    with socket.create_connection(address, timeout=DEADLINE_S) as sock:
        try:
            sock.sendall(stream + _SENTINEL_FRAME)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return frames  # closed by the broker before we finished: fine
        buf = b""
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no answer or close within {DEADLINE_S} s"
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return frames
            except TimeoutError:
                raise AssertionError(f"no answer or close within {DEADLINE_S} s") from None
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 4:
                (size,) = struct.unpack_from(">i", buf)
                assert 0 <= size < 1 << 30, f"response frame of {size} bytes"
                if len(buf) < 4 + size:
                    break
                frames.append(buf[4 : 4 + size])
                buf = buf[4 + size :]
    assert not buf, f"{len(buf)} bytes of a partial response frame before the close"
    return frames


def check_answers(frames: list[bytes]) -> None:
    """Responses are whole frames; a sentinel answer, if any, is intact and comes last."""
    for i, frame in enumerate(frames):
        assert len(frame) >= 4, frame
        (correlation,) = struct.unpack_from(">i", frame)
        if correlation == SENTINEL_CORRELATION:
            body = decode_response("ApiVersions", 0, frame)
            assert body["error_code"] == 0, body
            assert i == len(frames) - 1, "answers after the sentinel's"


def check_healthy(address: tuple[str, int], tracebacks: TracebackRecorder) -> None:
    assert api_versions_ok(address), "a fresh connection got no correct ApiVersions answer"
    with RawClient(address) as client:
        md = client.request("Metadata", 12, {"topics": None}, api_key=3)
    assert [(b["node_id"], b["port"]) for b in md["brokers"]] == [(1, address[1])], md
    found = [logging.Formatter().format(r) for r in tracebacks.records]
    tracebacks.records.clear()
    assert not found, "\n\n".join(found)


_SETTINGS = settings(
    max_examples=EXAMPLES_PER_CASE,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


@pytest.mark.parametrize(
    ("api_key", "name", "version"), CASES, ids=[f"{n}-v{v}" for _, n, v in CASES]
)
@_SETTINGS
@given(data=st.data())
def test_malformed_request(
    broker: Broker,
    tracebacks: TracebackRecorder,
    api_key: int,
    name: str,
    version: int,
    data: st.DataObject,
) -> None:
    address = broker.host, broker.port
    # A fresh group per example: a member left behind by an earlier example would make a join
    # wait (legitimately) for it to rejoin.
    group = f"fz{next(_GROUPS):08d}"  # fixed length: the drawn mutations must not depend on it
    payload = valid_request(api_key, name, version, group)[4:]
    choice = data.draw(st.integers(0, 9), label="kind")
    silent = False  # a well-formed Produce with acks=0 gets no answer, as in Kafka
    if choice == 0:
        kind, broken = "valid", payload
    elif choice <= 3:
        body = data.draw(random_fields(load(f"{name}Request").fields, version, group))
        kind, silent = "random fields", api_key == 0 and body["acks"] == 0
        broken = request_frame(name, version, body, api_key=api_key, correlation_id=1)[4:]
    else:
        kind, broken = data.draw(mutated(payload), label="mutation")
    stream = struct.pack(">i", len(broken)) + broken
    assume(not legitimately_slow(stream))
    frames = exchange(address, stream)
    check_answers(frames)
    if kind in ("valid", "random fields"):
        # A well-formed request never costs the connection: it is answered, then the sentinel.
        assert len(frames) == (1 if silent else 2), f"{len(frames)} answers to a {kind} request"
        assert struct.unpack_from(">i", frames[-1]) == (SENTINEL_CORRELATION,)
    check_healthy(address, tracebacks)


@settings(_SETTINGS, max_examples=300)
@given(stream=st.binary(min_size=1, max_size=512), sized=st.booleans())
def test_random_byte_streams(
    broker: Broker, tracebacks: TracebackRecorder, stream: bytes, sized: bool
) -> None:
    """Raw random bytes, with a random (or, half the time, consistent) size prefix."""
    address = broker.host, broker.port
    if sized:
        stream = struct.pack(">i", len(stream)) + stream
    assume(not legitimately_slow(stream))
    frames = exchange(address, stream)
    for frame in frames:
        assert len(frame) >= 4
    check_healthy(address, tracebacks)
