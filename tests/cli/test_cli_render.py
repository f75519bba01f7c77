"""Output and input formats, without a broker."""

from __future__ import annotations

import base64
import json

import click
import pytest

from strom.cli.produce import read_records
from strom.cli.render import Record, readable, to_json, to_text


def test_readable_keeps_one_line_per_record() -> None:
    assert readable(b"plain \xe2\x9c\x93") == "plain ✓"
    assert readable(b"two\nlines\r") == "two\\nlines\\r"
    assert readable(b"\xff") == "\\xff"
    assert readable(None) == "null"
    assert readable(b"a\tb") == "a\tb"
    assert readable(b"a\tb", escape_tab=True) == "a\\tb"


def test_text_layout() -> None:
    record = Record("t", 2, 7, key=b"k", value=b"v", timestamp=1000)
    assert to_text(record) == "v"
    assert to_text(record, print_key=True) == "k\tv"
    assert to_text(record, print_key=True, print_metadata=True) == (
        "Partition:2\tOffset:7\tCreateTime:1000\tk\tv"
    )


def test_json_is_exact() -> None:
    record = Record("t", 0, 1, key=None, value=b"\x00\xff", headers=[("h", b"x"), ("h", None)])
    obj = json.loads(to_json(record))
    assert obj == {
        "topic": "t",
        "partition": 0,
        "offset": 1,
        "timestamp": None,
        "key": None,
        "value": base64.b64encode(b"\x00\xff").decode(),
        "value_encoding": "base64",
        "headers": [["h", "x"], ["h", None]],
    }
    assert "\n" not in to_json(Record("t", 0, 0, key=b"a\nb", value=b"c"))


def test_read_records() -> None:
    lines = [b"k\tv\n", b"k2\tv\t2\r\n", b"k3::\tv"]
    assert list(read_records(lines, b"\t")) == [
        (1, b"k", b"v"),
        (2, b"k2", b"v\t2"),
        (3, b"k3::", b"v"),
    ]
    assert list(read_records([b"a\tb\n", b"\n"], None)) == [(1, None, b"a\tb"), (2, None, b"")]
    with pytest.raises(click.ClickException, match="line 1 has no key separator"):
        list(read_records([b"nokey\n"], b"\t"))
