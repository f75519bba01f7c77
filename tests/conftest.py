"""Suite-wide options: ``--run-slow`` (or STROM_SLOW=1) runs soak/crash tests in full."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=bool(os.environ.get("STROM_SLOW")),
        help="run the slow soak, load and crash tests in full",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or STROM_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
