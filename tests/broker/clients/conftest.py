"""Fixtures for the client-compatibility tests: a real broker on an ephemeral port."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_helpers import RestartableBroker

_names = itertools.count()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RestartableBroker]:
    """A broker with its data in ``tmp_path``; ``broker.restart()`` keeps the data and port."""
    b = RestartableBroker(tmp_path / "strom-data")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique within the session (readable in broker logs)."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-")
    return f"{stem}-{next(_names)}"
