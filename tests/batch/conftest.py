"""Fixtures of the local engine's tests (the files: :mod:`local_engine_data`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from local_engine_data import write_events

Writer = Callable[..., Path]


@pytest.fixture
def events(tmp_path: Path) -> Writer:
    def make(name: str = "events", **kwargs: object) -> Path:
        return write_events(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make
