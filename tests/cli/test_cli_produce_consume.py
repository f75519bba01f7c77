"""``strom produce`` and ``strom consume``: exact round trips, groups resuming, failures."""

from __future__ import annotations

import base64

import pytest
from cli_helpers import Run, json_lines


def _consume_json(strom: Run, topic: str, *extra: str) -> list[dict[str, object]]:
    out = strom("consume", topic, "--output", "json", "--timeout-ms", "1500", *extra).stdout
    return json_lines(out)


def test_round_trip_with_keys_and_headers(strom: Run, topic: str) -> None:
    lines = [
        "k1\tv1",
        "k2\tvalue with spaces\tand a tab",
        "\tempty key",
        "k4\t",
        "Schlüssel\tWert ✓ 値",
    ]
    produced = strom(
        "produce",
        topic,
        "--parse-key",
        "--header",
        "source=test",
        "--header",
        "n=1",
        input="".join(line + "\n" for line in lines),
    )
    assert f"produced 5 messages to {topic}" in produced.stderr

    records = _consume_json(strom, topic, "--from-beginning")
    assert [(r["key"], r["value"]) for r in records] == [tuple(li.split("\t", 1)) for li in lines]
    assert [r["offset"] for r in records] == [0, 1, 2, 3, 4]
    for r in records:
        assert r["topic"] == topic
        assert r["partition"] == 0
        assert isinstance(r["timestamp"], int) and r["timestamp"] > 0
        assert r["headers"] == [["source", "test"], ["n", "1"]]
        assert "value_encoding" not in r


def test_text_output_prints_one_line_per_record(strom: Run, topic: str) -> None:
    strom("produce", topic, "--parse-key", "--key-separator", ":", input="a:1\nb:2:3\r\n")
    plain = strom("consume", topic, "--from-beginning", "--max-messages", "2").stdout
    assert plain.splitlines() == ["1", "2:3"]
    keyed = strom("consume", topic, "--from-beginning", "--max-messages", "2", "--print-key")
    assert keyed.stdout.splitlines() == ["a\t1", "b\t2:3"]
    meta = strom("consume", topic, "--from-beginning", "--max-messages", "1", "--print-metadata")
    prefix = meta.stdout.split("\t")
    assert prefix[:2] == ["Partition:0", "Offset:0"]
    assert prefix[2].startswith("CreateTime:")
    assert prefix[3] == "1\n"
    assert "processed 1 messages" in meta.stderr


def test_non_utf8_values_stay_exact_in_json_and_readable_in_text(strom: Run, topic: str) -> None:
    strom("produce", topic, input=b"\xff\xfeok\n")
    text = strom("consume", topic, "--from-beginning", "--max-messages", "1").stdout
    assert text == "\\xff\\xfeok\n"
    [record] = _consume_json(strom, topic, "--from-beginning")
    assert record["value_encoding"] == "base64"
    assert base64.b64decode(str(record["value"])) == b"\xff\xfeok"
    assert record["key"] is None


def test_without_group_starts_at_the_end_by_default(strom: Run, topic: str) -> None:
    strom("produce", topic, input="old\n")
    fresh = strom("consume", topic, "--timeout-ms", "1000")
    assert fresh.stdout == ""
    assert "processed 0 messages" in fresh.stderr


@pytest.mark.parametrize("compression", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches(strom: Run, topic: str, compression: str) -> None:
    body = "".join(f"line {i} {'x' * 50}\n" for i in range(20))
    strom("produce", topic, "--compression", compression, "--acks", "1", input=body)
    out = strom("consume", topic, "--from-beginning", "--max-messages", "20").stdout
    assert out == body


def test_partition_option(strom: Run) -> None:
    strom("topics", "create", "--topic", "p3", "--partitions", "3")
    strom("produce", "p3", "--partition", "2", input="a\nb\n")
    records = _consume_json(strom, "p3", "--from-beginning")
    assert [(r["partition"], r["value"]) for r in records] == [(2, "a"), (2, "b")]
    missing = strom("produce", "p3", "--partition", "3", input="c\n", ok=False)
    assert missing.exit_code == 1
    assert "no partition 3" in missing.output


def test_group_resumes_where_it_stopped(strom: Run) -> None:
    strom("topics", "create", "--topic", "events", "--partitions", "3")
    values = [f"m{i}" for i in range(10)]
    strom("produce", "events", input="".join(v + "\n" for v in values))

    group = ("--group", "readers", "--from-beginning")
    first = strom("consume", "events", *group, "--max-messages", "4").stdout.splitlines()
    second = strom("consume", "events", *group, "--max-messages", "4").stdout.splitlines()
    rest = strom("consume", "events", *group, "--timeout-ms", "1500").stdout.splitlines()
    assert (len(first), len(second), len(rest)) == (4, 4, 2)
    assert sorted(first + second + rest) == sorted(values)  # nothing lost, nothing repeated


def test_line_without_key_separator(strom: Run, topic: str) -> None:
    result = strom("produce", topic, "--parse-key", input="k\tv\nno separator\n", ok=False)
    assert result.exit_code == 1
    assert "line 2 has no key separator" in result.output
    assert f"produced 1 messages to {topic}" in result.stderr


def test_delivery_failure_is_reported(strom: Run, topic: str) -> None:
    huge = "x" * 2_000_000
    result = strom("produce", topic, input=f"small\n{huge}\n", ok=False)
    assert result.exit_code == 1
    assert "1 messages were not delivered" in result.output
    assert "line 2" in result.output


def test_consume_missing_topic(strom: Run) -> None:
    result = strom("consume", "nope", "--timeout-ms", "500", ok=False)
    assert result.exit_code == 1
    assert "topic 'nope' does not exist" in result.output
