"""Bad input over raw sockets: every malformed or invalid request gets Kafka's answer.

Requests are built with strom's own codec (``broker_proc.request_frame``) and record batches with
``strom.kafka.protocol.records.build_batch``, then broken on purpose. Kafka's rules: a request
that cannot be parsed, or names an unknown API or an unsupported version, closes the connection
(except ApiVersions, which answers KIP-511's v0 UNSUPPORTED_VERSION); a request that parses but
asks for something invalid gets an error code in its response.

After every test an autouse check proves the broker is unharmed: a fresh connection gets
ApiVersions and Metadata answers, a record produced to a sentinel topic is acknowledged, the
sentinel's whole log reads back intact (CRCs, contiguous offsets, values), and the
``strom`` loggers recorded no exception traceback.

The disk-full test mounts a 2 MiB tmpfs (it needs root; it is skipped, with the reason, when
``mount`` is not allowed).
"""

from __future__ import annotations

import logging
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from broker_proc import (
    RawClient,
    TracebackRecorder,
    api_versions_ok,
    decode_response,
    fetch,
    produce,
    read_log,
    request_frame,
)

from strom.broker import Broker
from strom.broker.log import FlushPolicy, LogConfig
from strom.kafka.protocol.errors import ErrorCode
from strom.kafka.protocol.records import Record, build_batch

MAX_REQUEST = 256 * 1024
SENTINEL = "sentinel"
INVALID_TOPICS = ["bad topic", "..", ".", "a" * 250, "x/y", "tab\there", "ünïcode"]

Address = tuple[str, int]


def batch(*values: bytes) -> bytes:
    return build_batch([Record(value=v) for v in values])


def legacy_message_set(magic: int) -> bytes:
    """One message in the pre-0.11 format (magic 0 or 1): offset, size, then the message."""
    body = struct.pack(">bb", magic, 0)
    if magic == 1:
        body += struct.pack(">q", 1_700_000_000_000)
    body += struct.pack(">i", -1) + struct.pack(">i", 5) + b"hello"  # null key, value
    message = struct.pack(">I", zlib.crc32(body)) + body
    return struct.pack(">qi", 0, len(message)) + message


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
    with Broker(tmp_path_factory.mktemp("bad-input") / "data", max_request_bytes=MAX_REQUEST) as b:
        yield b


@pytest.fixture
def address(broker: Broker) -> Address:
    return broker.host, broker.port


_sentinel_values: list[bytes] = []


def assert_healthy(address: Address, tracebacks: TracebackRecorder, topic: str = SENTINEL) -> None:
    """The broker answers new connections and serves an intact, growing sentinel log."""
    assert api_versions_ok(address)
    value = b"check-%d" % len(_sentinel_values)
    with RawClient(address) as client:
        md = client.request("Metadata", 12, {"topics": None}, api_key=3)
        assert [b["port"] for b in md["brokers"]] == [address[1]], md
        answer = produce(client, topic, 0, batch(value))
        assert answer["error_code"] == 0, answer
        assert answer["base_offset"] == len(_sentinel_values)
    _sentinel_values.append(value)
    assert [r.value for r in read_log(address, topic, 0)] == _sentinel_values
    found = [logging.Formatter().format(r) for r in tracebacks.records]
    tracebacks.records.clear()
    assert not found, "\n\n".join(found)


@pytest.fixture(autouse=True)
def still_healthy(address: Address, tracebacks: TracebackRecorder) -> Iterator[None]:
    yield
    assert_healthy(address, tracebacks)


def create_topic(client: RawClient, name: str, partitions: int = 1, **configs: str) -> int:
    body = client.request(
        "CreateTopics",
        7,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": [
                        {"name": k.replace("_", "."), "value": v} for k, v in configs.items()
                    ],
                }
            ],
            "timeout_ms": 10_000,
        },
        api_key=19,
    )
    [answer] = body["topics"]
    return int(answer["error_code"])


def seeded_topic(address: Address, name: str, *values: bytes) -> None:
    """Create ``name`` with one partition holding ``values``."""
    with RawClient(address) as client:
        assert create_topic(client, name) == 0
        for v in values:
            assert produce(client, name, 0, batch(v))["error_code"] == 0


def values_of(address: Address, topic: str) -> list[bytes | None]:
    return [r.value for r in read_log(address, topic, 0)]


# -- frames the broker cannot parse: the connection is closed ----------------------------------


def _header(api_key: int, version: int, client_id: bytes = b"\x00\x04test") -> bytes:
    return struct.pack(">hhi", api_key, version, 7) + client_id


def _framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _metadata_frame() -> bytes:
    return request_frame("Metadata", 12, {"topics": [{"name": "abc"}]}, api_key=3)


MALFORMED = {
    "empty frame": _framed(b""),
    "header cut short": _framed(b"\x00\x12\x00"),
    "client id longer than the frame": _framed(_header(3, 1, b"\x00\x40ab")),
    "flexible header without tagged fields": _framed(_header(3, 12)),
    "body truncated, size consistent": _framed(_metadata_frame()[4:-2]),
    "garbage body": _framed(_header(0, 9) + b"\x00" + b"\xff" * 40),
    "array length beyond the frame": _framed(_header(3, 4) + struct.pack(">i", 1_000_000)),
    "negative array length": _framed(_header(3, 4) + struct.pack(">i", -5)),
    "topic name not UTF-8": _framed(_header(3, 4) + struct.pack(">ih", 1, 2) + b"\xff\xfe\x01"),
    "records length beyond the frame": _framed(
        _header(0, 3)
        + struct.pack(">hhi", -1, -1, 1000)  # null transactional id, acks -1, timeout
        + struct.pack(">i", 1)
        + struct.pack(">h", 1)
        + b"t"
        + struct.pack(">i", 1)
        + struct.pack(">ii", 0, 10_000)  # partition 0, records of 10000 bytes
        + b"\x00" * 20
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_frame_closes_the_connection(address: Address, name: str) -> None:
    with RawClient(address) as client:
        client.send(MALFORMED[name])
        client.expect_close()


def test_frame_shorter_than_its_size_then_end_of_stream(address: Address) -> None:
    with RawClient(address) as client:
        client.send(_metadata_frame()[:-3])  # the size prefix claims 3 bytes more
        client.sock.shutdown(socket.SHUT_WR)  # which never come
        client.expect_close()


def test_partial_frame_then_hang_up(address: Address) -> None:
    """A client that disappears in the middle of a frame costs the broker nothing."""
    for cut in (1, 3, 4, 10):
        with RawClient(address) as client:
            client.send(_metadata_frame()[:cut])


def test_connection_reset_mid_request(address: Address) -> None:
    with RawClient(address) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.send(_metadata_frame()[:12])
    # closed with RST by the context manager


@pytest.mark.parametrize("size", [MAX_REQUEST + 1, 2**31 - 1, -1, -(2**31)])
def test_frame_size_over_the_limit_or_negative(address: Address, size: int) -> None:
    """The size prefix alone gets the connection closed: the body is never awaited."""
    with RawClient(address) as client:
        client.send(struct.pack(">i", size))
        client.expect_close()


def test_request_at_the_size_limit_is_served(address: Address) -> None:
    seeded_topic(address, "limit")
    size = MAX_REQUEST - 200
    while True:  # grow the value until the frame (without its prefix) is exactly the limit
        body = _produce_body("limit", 0, batch(b"x" * size), -1)
        frame = request_frame("Produce", 9, body, api_key=0)
        if len(frame) - 4 >= MAX_REQUEST:
            break
        size += MAX_REQUEST - (len(frame) - 4)
    assert len(frame) - 4 == MAX_REQUEST
    with RawClient(address) as client:
        client.send(frame)
        response = client.recv_frame()
    assert response is not None
    answer = decode_response("Produce", 9, response)["responses"][0]["partition_responses"][0]
    assert answer["error_code"] == 0
    assert values_of(address, "limit") == [b"x" * size]


# -- unknown APIs and versions ------------------------------------------------------------------


@pytest.mark.parametrize("api_key", [24, 26, 67, 999, 32767, -1])
def test_unknown_api_key_closes_the_connection(address: Address, api_key: int) -> None:
    with RawClient(address) as client:
        client.send(_framed(_header(api_key, 0) + b"\x00" * 8))
        client.expect_close()


@pytest.mark.parametrize("version", [5, 99, 32767, -1])
def test_api_versions_unknown_version_gets_v0_answer(address: Address, version: int) -> None:
    """KIP-511: UNSUPPORTED_VERSION in a v0 response, with the versions the broker serves."""
    with RawClient(address) as client:
        # A newer client may send a body this broker cannot parse: it must be ignored.
        client.send(_framed(_header(18, version) + b"\x00\x07unknown-body\x01"))
        response = client.recv_frame()
        assert response is not None
        body = decode_response("ApiVersions", 0, response, expect_correlation=7)
        assert body["error_code"] == ErrorCode.UNSUPPORTED_VERSION
        served = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
        assert served[18] == (0, 4)
        # The connection stays usable: the client retries with a version both sides know.
        again = client.request("ApiVersions", 0, {}, api_key=18)
        assert again["error_code"] == 0


@pytest.mark.parametrize(
    ("name", "api_key", "version"),
    [
        ("Produce", 0, 10),
        ("Fetch", 1, 13),
        ("Metadata", 3, 13),
        ("ListOffsets", 2, 8),
        ("OffsetCommit", 8, 9),
        ("Produce", 0, -1),
    ],
)
def test_unsupported_version_closes_the_connection(
    address: Address, name: str, api_key: int, version: int
) -> None:
    with RawClient(address) as client:
        # Outside strom's range, and for some versions outside the spec kafka-python ships:
        # the body does not matter, the version alone decides.
        client.send(_framed(_header(api_key, version) + b"\x00" * 16))
        client.expect_close()


# -- requests that parse but ask for something invalid: error codes -----------------------------


def test_produce_with_crc_mismatch(address: Address) -> None:
    seeded_topic(address, "crc", b"good-0")
    broken = bytearray(batch(b"evil"))
    broken[-1] ^= 0x01  # inside the records, covered by the CRC
    with RawClient(address) as client:
        answer = produce(client, "crc", 0, bytes(broken))
        assert answer["error_code"] == ErrorCode.CORRUPT_MESSAGE, answer
        assert answer["base_offset"] == -1
        # A good batch after a bad one in the same request: the whole partition is refused.
        answer = produce(client, "crc", 0, batch(b"good-1") + bytes(broken))
        assert answer["error_code"] == ErrorCode.CORRUPT_MESSAGE, answer
        assert produce(client, "crc", 0, batch(b"good-1"))["base_offset"] == 1
    assert values_of(address, "crc") == [b"good-0", b"good-1"]


MALFORMED_RECORDS = {
    "truncated batch": batch(b"a")[:-1],
    "trailing bytes": batch(b"a") + b"\x00" * 5,
    "zeroed header": b"\x00" * 61,
    "length prefix only": batch(b"a")[:12] + b"\x00" * 3,
    "negative batch length": batch(b"a")[:8] + struct.pack(">i", -1) + batch(b"a")[12:],
    "empty": b"",
}


@pytest.mark.parametrize("case", list(MALFORMED_RECORDS))
def test_produce_with_malformed_records(address: Address, case: str) -> None:
    topic = f"malformed-{list(MALFORMED_RECORDS).index(case)}"
    seeded_topic(address, topic, b"before")
    with RawClient(address) as client:
        answer = produce(client, topic, 0, MALFORMED_RECORDS[case])
    assert answer["error_code"] in (ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_RECORD), answer
    assert values_of(address, topic) == [b"before"]


@pytest.mark.parametrize("magic", [0, 1])
def test_produce_legacy_message_format(address: Address, magic: int) -> None:
    topic = f"magic-{magic}"
    seeded_topic(address, topic, b"v2")
    with RawClient(address) as client:
        answer = produce(client, topic, 0, legacy_message_set(magic))
    assert answer["error_code"] == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, answer
    assert values_of(address, topic) == [b"v2"]


@pytest.mark.parametrize("name", INVALID_TOPICS)
def test_invalid_topic_names(address: Address, broker: Broker, name: str) -> None:
    with RawClient(address) as client:
        assert produce(client, name, 0, batch(b"x"))["error_code"] == (
            ErrorCode.INVALID_TOPIC_EXCEPTION
        )
        for allow in (True, False):
            md = client.request(
                "Metadata",
                12,
                {"topics": [{"name": name}], "allow_auto_topic_creation": allow},
                api_key=3,
            )
            [topic] = md["topics"]
            assert topic["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION, (allow, topic)
        assert create_topic(client, name) == ErrorCode.INVALID_TOPIC_EXCEPTION
        listed = client.request("Metadata", 12, {"topics": None}, api_key=3)
    assert name not in {t["name"] for t in listed["topics"]}


def test_batch_over_max_message_bytes(address: Address) -> None:
    with RawClient(address) as client:
        assert create_topic(client, "small", max_message_bytes="1024") == 0
        answer = produce(client, "small", 0, batch(b"y" * 2000))
        assert answer["error_code"] == ErrorCode.MESSAGE_TOO_LARGE, answer
        assert produce(client, "small", 0, batch(b"fits"))["base_offset"] == 0
    assert values_of(address, "small") == [b"fits"]


def test_excessive_partition_counts(address: Address) -> None:
    """Like Kafka's controller, no request may create more than 10000 partitions."""
    with RawClient(address) as client:
        assert create_topic(client, "huge", partitions=2**31 - 1) == ErrorCode.POLICY_VIOLATION
        assert create_topic(client, "grows") == 0
        body = client.request(
            "CreatePartitions",
            3,
            {
                "topics": [{"name": "grows", "count": 2**31 - 1, "assignments": None}],
                "timeout_ms": 10_000,
                "validate_only": False,
            },
            api_key=37,
        )
        [answer] = body["results"]
        assert answer["error_code"] == ErrorCode.POLICY_VIOLATION, answer
        md = client.request(
            "Metadata",
            12,
            {"topics": [{"name": "grows"}, {"name": "huge"}], "allow_auto_topic_creation": False},
            api_key=3,
        )
    grows, huge = md["topics"]
    assert len(grows["partitions"]) == 1
    assert huge["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


@pytest.mark.parametrize("acks", [5, 2, -2, 32767])
def test_invalid_required_acks(address: Address, acks: int) -> None:
    topic = f"acks-{acks + 2}"
    seeded_topic(address, topic, b"first")
    with RawClient(address) as client:
        answer = produce(client, topic, 0, batch(b"x"), acks=acks)
    assert answer["error_code"] == ErrorCode.INVALID_REQUIRED_ACKS, answer
    assert values_of(address, topic) == [b"first"]


@pytest.mark.parametrize("offset", [3, 100, 2**62, -5, -1])
def test_fetch_out_of_range(address: Address, offset: int) -> None:
    topic = f"range-{offset + 5}"
    seeded_topic(address, topic, b"a", b"b")
    with RawClient(address) as client:
        answer = fetch(client, topic, 0, offset)
    assert answer["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE, answer
    assert (answer["high_watermark"], answer["log_start_offset"]) == (2, 0)
    assert not answer["records"]


@pytest.mark.parametrize("partition", [1, 7, -1, 2**31 - 1])
def test_nonexistent_partition(address: Address, partition: int) -> None:
    topic = f"one-partition-{partition + 1}"
    seeded_topic(address, topic, b"only")
    with RawClient(address) as client:
        answer = produce(client, topic, partition, batch(b"x"))
        assert answer["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, answer
        answer = fetch(client, topic, partition, 0)
        assert answer["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, answer
    assert values_of(address, topic) == [b"only"]


def test_requests_pipelined_after_an_error_are_still_served(address: Address) -> None:
    """An error answer does not desynchronise the connection: later requests get their own."""
    seeded_topic(address, "pipeline", b"p0")
    frames = [
        request_frame(
            "Produce", 9, _produce_body("pipeline", 0, batch(b"p1"), 5), api_key=0, correlation_id=1
        ),
        request_frame(
            "Produce",
            9,
            _produce_body("pipeline", 0, batch(b"p1"), -1),
            api_key=0,
            correlation_id=2,
        ),
        request_frame("ApiVersions", 3, {}, api_key=18, correlation_id=3),
    ]
    with RawClient(address) as client:
        client.send(b"".join(frames))
        first = client.recv_frame()
        second = client.recv_frame()
        third = client.recv_frame()
    assert first is not None and second is not None and third is not None
    first_body = decode_response("Produce", 9, first, expect_correlation=1)
    second_body = decode_response("Produce", 9, second, expect_correlation=2)
    decode_response("ApiVersions", 3, third, expect_correlation=3)
    assert first_body["responses"][0]["partition_responses"][0]["error_code"] == 21
    assert second_body["responses"][0]["partition_responses"][0]["base_offset"] == 1
    assert values_of(address, "pipeline") == [b"p0", b"p1"]


def _produce_body(topic: str, partition: int, records: bytes, acks: int) -> dict[str, object]:
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": 1000,
        "topic_data": [
            {"name": topic, "partition_data": [{"index": partition, "records": records}]}
        ],
    }


# -- clients that hang up at awkward moments -----------------------------------------------------


def test_client_resets_during_a_long_poll_fetch(address: Address) -> None:
    """The fetch wakes up with a large (sendfile) answer for a connection that is gone."""
    seeded_topic(address, "hangup", b"first")
    with RawClient(address) as waiting:
        body = {
            "max_wait_ms": 10_000,
            "min_bytes": 1,
            "max_bytes": 8 << 20,
            "topics": [
                {
                    "topic": "hangup",
                    "partitions": [
                        {"partition": 0, "fetch_offset": 1, "partition_max_bytes": 8 << 20}
                    ],
                }
            ],
        }
        waiting.send(request_frame("Fetch", 12, body, api_key=1))
        waiting.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with RawClient(address) as client:
        assert produce(client, "hangup", 0, batch(b"z" * 200_000))["error_code"] == 0
    # The woken fetch has been answered (to nobody) once the next fetch of that data returns.
    assert values_of(address, "hangup") == [b"first", b"z" * 200_000]


def test_client_closes_with_large_fetches_pipelined(address: Address) -> None:
    seeded_topic(address, "pipelined-fetch", b"a" * 100_000, b"b" * 100_000)
    body_frames = [
        request_frame(
            "Fetch",
            12,
            {
                "max_wait_ms": 0,
                "min_bytes": 1,
                "max_bytes": 8 << 20,
                "topics": [
                    {
                        "topic": "pipelined-fetch",
                        "partitions": [
                            {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 8 << 20}
                        ],
                    }
                ],
            },
            api_key=1,
            correlation_id=i,
        )
        for i in range(50)
    ]
    for _ in range(5):
        with RawClient(address) as client:
            client.send(b"".join(body_frames))
            client.recv_exactly(100)


# -- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tiny_tmpfs: Callable[[str], Path]) -> Path:
    return tiny_tmpfs("2m")


def test_disk_full(tiny_disk: Path, tracebacks: TracebackRecorder) -> None:
    """Produce until KAFKA_STORAGE_ERROR (no crash, no hang); acknowledged data stays readable;
    the broker restarts on the still-full disk; freeing space lets produce work again; a
    restart after that recovers every acknowledged record."""
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\x00" * 512 * 1024)  # deleted later, to give the broker room again
    data_dir = tiny_disk / "data"
    config = {"log": LogConfig(flush=FlushPolicy.parse("always"), segment_bytes=300_000)}
    acked: list[bytes] = []
    big = b""
    with Broker(data_dir, **config) as broker:
        address = broker.host, broker.port
        with RawClient(address) as client:
            assert create_topic(client, "full", partitions=1) == 0
            for i in range(1000):
                big = b"%06d" % i + b"." * 20_000
                answer = produce(client, "full", 0, batch(big))
                if answer["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR:
                    break
                assert answer["error_code"] == 0, answer
                assert answer["base_offset"] == len(acked)
                acked.append(big)
            else:
                pytest.fail("a 2 MiB disk never filled up")
            # Still full: the same batch fails the same way, and nothing half-written shows.
            assert produce(client, "full", 0, batch(big))["error_code"] == 56
        assert len(acked) > 10
        assert values_of(address, "full") == acked
        assert api_versions_ok(address)

    with Broker(data_dir, **config) as broker:  # a restart while the disk is still full
        address = broker.host, broker.port
        assert values_of(address, "full") == acked
        with RawClient(address) as client:
            assert produce(client, "full", 0, batch(big))["error_code"] == 56

        filler.unlink()
        with RawClient(address) as client:
            answer = produce(client, "full", 0, batch(big))
            assert answer["error_code"] == 0, answer
            assert answer["base_offset"] == len(acked)
        acked.append(big)
        assert values_of(address, "full") == acked
    # Storage errors are logged, but no failure may escape as a traceback.
    found = [logging.Formatter().format(r) for r in tracebacks.records]
    tracebacks.records.clear()
    assert not found, "\n\n".join(found)

    with Broker(data_dir, **config) as broker:
        address = broker.host, broker.port
        assert values_of(address, "full") == acked
        with RawClient(address) as client:
            assert produce(client, "full", 0, batch(b"after-restart"))["base_offset"] == len(acked)
