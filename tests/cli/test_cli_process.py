"""The installed ``strom`` executable: signals end a consumer cleanly; the demo runs end to end."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from cli_helpers import Run

from strom.broker import Broker

STROM = str(Path(sys.executable).with_name("strom"))


def test_sigterm_commits_and_leaves(strom: Run, strom_broker: Broker, topic: str) -> None:
    strom("produce", topic, input="a\nb\nc\n")
    argv = [
        STROM,
        "consume",
        topic,
        "--group",
        "g",
        "--from-beginning",
        "--bootstrap-server",
        strom_broker.bootstrap_servers,
    ]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(3)]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert seen == ["a\n", "b\n", "c\n"]
    assert proc.returncode == 0, err
    assert "processed 3 messages" in err
    again = strom("consume", topic, "--group", "g", "--from-beginning", "--timeout-ms", "1500")
    assert again.stdout == ""  # everything printed before SIGTERM was committed


def test_demo() -> None:
    done = subprocess.run(
        [STROM, "demo", "--messages", "20", "--interval", "0.01"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sample-topic" in done.stdout
    assert "all matched" in done.stdout
