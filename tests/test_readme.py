"""README's code runs as written, so the docs cannot rot."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strom import Broker

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # Like the broker's listener: connections in TIME_WAIT do not make the port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_readme_has_the_examples() -> None:
    blocks = _python_blocks()
    assert any("KafkaProducer" in b for b in blocks)
    assert any("Broker()" in b for b in blocks)


def test_embedded_broker_example() -> None:
    (block,) = [b for b in _python_blocks() if "Broker()" in b]
    exec(compile(block, "README.md", "exec"), {})


def test_engine_example() -> None:
    blocks = _python_blocks()
    (block,) = [b for b in blocks if "run_bounded" in b and "Tumbling" in b and "asof" not in b]
    exec(compile(block, "README.md", "exec"), {})


def test_asof_join_example() -> None:
    (block,) = [b for b in _python_blocks() if ".asof_join(" in b]
    exec(compile(block, "README.md", "exec"), {})


def test_keyed_aggregation_and_join_example() -> None:
    (block,) = [b for b in _python_blocks() if ".join(" in b and "key_by" in b]
    exec(compile(block, "README.md", "exec"), {})


def test_integer_sum_example() -> None:
    (block,) = [b for b in _python_blocks() if "OverflowError" in b]
    exec(compile(block, "README.md", "exec"), {})


def test_classic_quick_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick start verbatim, against a strom broker on localhost:9092."""
    if not _port_free(9092):
        pytest.skip("127.0.0.1:9092 is in use; the quick start needs that port")
    (block,) = [b for b in _python_blocks() if "KafkaProducer" in b]
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: real_sleep(min(s, 0.01)))
    with Broker(tmp_path / "data", port=9092):
        exec(compile(block, "README.md", "exec"), {})
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "strom",
                "consume",
                "sample-topic",
                "--from-beginning",
                "--max-messages",
                "10",
                "--timeout-ms",
                "20000",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    values = [json.loads(line) for line in out.stdout.splitlines()]
    assert [v["value"] for v in values] == list(range(10))
    assert all(isinstance(v["timestamp"], float) for v in values)


def test_local_engine_example() -> None:
    (block,) = [b for b in _python_blocks() if "run_local" in b]
    exec(compile(block, "README.md", "exec"), {})
