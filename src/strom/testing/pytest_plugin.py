"""pytest plugin (registered through the ``pytest11`` entry point): the ``strom_broker`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from strom.broker.embedded import Broker


@pytest.fixture
def strom_broker(tmp_path: Path) -> Iterator[Broker]:
    """A strom broker on an ephemeral 127.0.0.1 port with its log in ``tmp_path``."""
    with Broker(tmp_path / "strom-data") as broker:
        yield broker
