"""KafkaSource's isolation levels, on strom's own client and on librdkafka, against a broker
whose partition holds transactional batches and markers (written into its log directly), and
the native client's aborted-record filter on crafted bytes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.broker.txn_fill import COMMITTED, END, HISTORY, UNCOMMITTED, apply, fill

from strom.broker import Broker
from strom.broker.log import LogConfig, PartitionLog
from strom.connectors import KafkaSource
from strom.connectors.kafka.native_records import decode_fetched
from strom.engine.contracts import END_OF_PARTITION

CLIENTS = ["strom", "librdkafka"]


def _values(buf: bytes, aborted: list[tuple[int, int]] | None) -> tuple[list[bytes], int | None]:
    fetched = decode_fetched(buf, aborted=aborted)
    return [v or b"" for v in fetched.columns.value_list()], fetched.next_offset


def test_decode_drops_aborted_transactions(tmp_path: Path) -> None:
    with PartitionLog(tmp_path / "t-0", LogConfig()) as log:
        apply(log, HISTORY)
        buf = log.read(0, 1 << 20).read_bytes()
        aborted = log.aborted_transactions(0, END)
    assert aborted == [(2, 3), (1, 5)]
    assert _values(buf, aborted) == (COMMITTED, END)
    assert _values(buf, None) == (UNCOMMITTED, END)
    assert _values(buf, []) == (UNCOMMITTED, END)  # an empty list drops only the markers
    assert _values(buf, [(1, 5)])[0] == [v for v in UNCOMMITTED if v != b"a3"]


def _read_bounded(source: KafkaSource, timeout: float = 20) -> list[bytes]:
    """Everything partition 0 of a bounded source delivers, up to its end."""
    reader = source.open_partition(0)
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (item := reader.poll()) is not END_OF_PARTITION:
        assert time.monotonic() < deadline, f"no end after {got}"
        if item is None:
            source.wait(0.2)
        else:
            got += item["value"].to_list()
    return got


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("isolation", "expected"),
    [("read_committed", COMMITTED), ("read_uncommitted", UNCOMMITTED)],
)
def test_bounded_source(
    strom_broker: Broker, client: str, isolation: str, expected: list[bytes]
) -> None:
    fill(strom_broker, "t", HISTORY)
    source = KafkaSource(
        strom_broker.bootstrap_servers, "t", value_format="raw", bounded=True,
        client=client, isolation_level=isolation,  # type: ignore[arg-type]
    )  # fmt: skip
    with source:
        assert _read_bounded(source) == expected
        assert source.positions() == {0: END}  # past the final commit marker


@pytest.mark.parametrize("client", CLIENTS)
def test_unbounded_source_waits_at_the_lso(strom_broker: Broker, client: str) -> None:
    fill(strom_broker, "t", [("plain", [b"before"]), ("txn", 7, [b"open"]), ("plain", [b"x"])])
    source = KafkaSource(
        strom_broker.bootstrap_servers, "t", value_format="raw", client=client,  # type: ignore[arg-type]
        consumer_config={"fetch.wait.max.ms": 100},
    )  # fmt: skip
    with source:
        reader = source.open_partition(0)
        got: list[bytes] = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            item = reader.poll()
            if item is None or item is END_OF_PARTITION:
                source.wait(0.1)
            else:
                got += item["value"].to_list()
        assert got == [b"before"]  # the open transaction holds back everything after it
        assert reader.position() == {"offset": 1}
        fill(strom_broker, "t", [("abort", 7), ("plain", [b"y"])])
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            item = reader.poll()
            if item is None or item is END_OF_PARTITION:
                source.wait(0.1)
            else:
                got += item["value"].to_list()
        assert got == [b"before", b"x", b"y"]
        assert reader.position() == {"offset": 5}
        # a partition ending with a marker: the position goes past it once it is fetched
        fill(strom_broker, "t", [("txn", 8, [b"z"]), ("commit", 8)])
        deadline = time.monotonic() + 20
        while reader.position() != {"offset": 7} and time.monotonic() < deadline:
            item = reader.poll()
            if item is None or item is END_OF_PARTITION:
                source.wait(0.1)
            else:
                got += item["value"].to_list()
        assert got[-1] == b"z" and reader.position() == {"offset": 7}


def test_bounded_read_committed_ends_at_the_lso(strom_broker: Broker) -> None:
    fill(strom_broker, "t", [("plain", [b"a"]), ("txn", 7, [b"open"]), ("plain", [b"b"])])
    with KafkaSource(strom_broker.bootstrap_servers, "t", value_format="raw", bounded=True) as s:
        assert _read_bounded(s) == [b"a"]
        assert s.positions() == {0: 1}
    with KafkaSource(
        strom_broker.bootstrap_servers, "t", value_format="raw", bounded=True,
        isolation_level="read_uncommitted",
    ) as s:  # fmt: skip
        assert _read_bounded(s) == [b"a", b"open", b"b"]


def test_isolation_level_is_checked() -> None:
    with pytest.raises(ValueError, match="isolation_level must be"):
        KafkaSource("localhost:1", "t", value_format="raw", isolation_level="committed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass isolation_level"):
        KafkaSource(
            "localhost:1", "t", value_format="raw", client="librdkafka",
            consumer_config={"isolation.level": "read_uncommitted"},
        )  # fmt: skip
