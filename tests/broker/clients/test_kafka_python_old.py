"""An old kafka-python (1.4.x, 2019) at the ``api_version`` settings that send old requests.

kafka-python 1.4 takes ``api_version`` as given: (0, 8, 1) sends Produce v0 with message format
v0, Fetch v0, ListOffsets v0 and OffsetCommit/OffsetFetch v0; (0, 8, 2) OffsetCommit/OffsetFetch
v1 through a coordinator found with FindCoordinator v0; (0, 9) Produce/Fetch v1; (0, 10, 0)
Produce/Fetch v2 with message format v1 (timestamps); (0, 10, 1) Fetch v3 and ListOffsets v1.
strom's own venv holds kafka-python 3, so the old release runs from a separate interpreter,
named by the environment variable STROM_OLD_KAFKA_PYTHON (e.g. a throwaway venv made with
``python3 -m venv /tmp/kp14 && /tmp/kp14/bin/pip install kafka-python==1.4.7``, plus
``python-snappy`` and ``lz4 xxhash`` for those codecs); without it the test is skipped, saying
so. The driver is ``old_kafka_python/check.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from strom.broker import Broker

PYTHON = os.environ.get("STROM_OLD_KAFKA_PYTHON")
CHECK = Path(__file__).parent / "old_kafka_python" / "check.py"

pytestmark = pytest.mark.skipif(
    not PYTHON,
    reason="set STROM_OLD_KAFKA_PYTHON to a Python with kafka-python 1.4.x to run this test",
)

# What the old interpreter must import for each codec (magic 0 LZ4 needs xxhash there).
CODEC_MODULES = {"none": "kafka", "gzip": "kafka", "snappy": "snappy", "lz4": "lz4, xxhash"}


@pytest.mark.parametrize("api_version", ["0.8.1", "0.8.2", "0.9", "0.10.0", "0.10.1"])
@pytest.mark.parametrize("codec", list(CODEC_MODULES))
def test_old_kafka_python(strom_broker: Broker, api_version: str, codec: str) -> None:
    assert PYTHON is not None
    if codec == "lz4" and api_version == "0.8.1":
        pytest.skip("kafka-python offers LZ4 from api_version 0.8.2 only")
    probe = [PYTHON, "-c", f"import {CODEC_MODULES[codec]}"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        pytest.skip(f"{PYTHON} cannot import {CODEC_MODULES[codec]} (needed for {codec})")
    topic = f"old-kp-{api_version}-{codec}"
    done = subprocess.run(
        [PYTHON, str(CHECK), strom_broker.bootstrap_servers, api_version, topic, codec],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["offsets"] == list(range(10))
    assert [(o, k, v) for o, k, v, _ in result["got"]] == [(i, f"k{i}", f"v{i}") for i in range(10)]
    has_timestamps = tuple(map(int, api_version.split("."))) >= (0, 10)
    assert all((ts is not None and ts > 0) == has_timestamps for *_, ts in result["got"])
    assert result["committed"] == 4
