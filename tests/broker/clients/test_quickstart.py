"""The classic Kafka quick start, unchanged, against strom (the README's example).

An unmodified kafka-python producer sends JSON to ``sample-topic`` (auto-created), then the real
``strom consume`` command, run as a separate process, prints exactly those messages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from client_helpers import RestartableBroker
from kafka import KafkaProducer


def strom_command() -> list[str]:
    """The installed ``strom`` script next to this interpreter, else ``python -m strom``."""
    script = Path(sys.executable).with_name("strom")
    if script.exists():
        return [str(script)]
    found = shutil.which("strom")
    return [found] if found else [sys.executable, "-m", "strom"]


# kafka-python 3 warns about plain-function serializers; the quick start uses one, unchanged.
@pytest.mark.filterwarnings("ignore:value_serializer does not implement")
def test_quick_start(broker: RestartableBroker) -> None:
    # The quick start's producer, verbatim apart from the address and the 1 s sleeps.
    producer = KafkaProducer(
        bootstrap_servers=[f"localhost:{broker.port}"],
        value_serializer=lambda x: json.dumps(x).encode("utf-8"),
    )
    sent = []
    for i in range(10):
        data = {"timestamp": time.time(), "value": i}
        producer.send("sample-topic", value=data)
        sent.append(data)
    producer.flush()
    producer.close()

    done = subprocess.run(
        [
            *strom_command(),
            "consume",
            "sample-topic",
            "--from-beginning",
            "--bootstrap-server",
            f"localhost:{broker.port}",
            "--max-messages",
            str(len(sent)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [json.dumps(d) for d in sent]
    assert [json.loads(line) for line in done.stdout.splitlines()] == sent
