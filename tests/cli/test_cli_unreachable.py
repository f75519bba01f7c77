"""Against an address where no broker listens, commands fail with a clear error, not a hang."""

from __future__ import annotations

import pytest
from cli_helpers import invoke


@pytest.mark.parametrize(
    "args",
    [("topics", "list"), ("produce", "t"), ("consume", "t"), ("groups", "list")],
    ids=["admin", "producer", "consumer", "groups"],
)
def test_unreachable_broker(closed_port: str, args: tuple[str, ...]) -> None:
    result = invoke(closed_port, *args, input="a\n")
    assert result.exit_code == 1
    assert f"Error: cannot connect to the Kafka cluster at {closed_port}" in result.output
    assert "Traceback" not in result.output
