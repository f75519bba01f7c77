"""Fixtures for the CLI tests: the real ``strom`` command against a real in-process broker."""

from __future__ import annotations

import socket

import pytest
from cli_helpers import Run, invoke
from click.testing import Result

from strom.broker import Broker


@pytest.fixture
def strom(strom_broker: Broker) -> Run:
    """``strom(*args, input=...)`` runs a client command against the test broker."""

    def run(*args: str, input: str | bytes | None = None, ok: bool = True) -> Result:
        result = invoke(strom_broker.bootstrap_servers, *args, input=input)
        if ok:
            assert result.exit_code == 0, (result.exit_code, result.output)
        return result

    return run


@pytest.fixture
def topic(strom: Run) -> str:
    """A fresh 1-partition topic (one partition keeps the order of records total)."""
    strom("topics", "create", "--topic", "t1", "--partitions", "1")
    return "t1"


@pytest.fixture
def closed_port() -> str:
    """``HOST:PORT`` where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"
