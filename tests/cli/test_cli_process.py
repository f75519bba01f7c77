"""The installed ``strom`` executable: signals end a consumer cleanly; the demos run end to end
(the ML one in ``tests/demo/test_ml_demo.py``) or say what they miss."""

from __future__ import annotations

import re
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


def test_demo_without_the_ml_extra_says_what_to_install() -> None:
    hide = "import sys; sys.modules['skops'] = None; from strom.cli.main import cli; cli(['demo'])"
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "needs strom's ml extra (skops missing): pip install 'strom[ml]'" in done.stderr
    assert "strom demo iot" in done.stderr and "Traceback" not in done.stderr


def test_demo_options_before_iot_are_refused() -> None:
    done = subprocess.run([STROM, "demo", "--seed", "1", "iot"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "--seed is an option of the ML loop" in done.stderr, done.stderr


def test_demo_iot() -> None:
    done = subprocess.run(
        [STROM, "demo", "iot", "--events", "3000", "--devices", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    def number(label: str) -> int:
        match = re.search(rf"^\s*{re.escape(label)}\s*\S\s*(\d+)", done.stdout, re.M)
        assert match, f"no {label!r} in the summary:\n{done.stdout}"
        return int(match.group(1))

    assert number("events produced") == 3000
    assert number("dead letters") == number("malformed (injected)") > 0
    assert 0 <= number("late events") <= number("late (injected)")
    assert number("windows written") > 0
    assert number("alerts") == done.stdout.count("ALERT ")  # plain output: one line per alert
    assert re.search(r"^\s*check\s*\S\s*passed", done.stdout, re.M), done.stdout
