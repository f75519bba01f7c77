"""Every example in strom's docstrings runs, so the docs cannot rot."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import strom

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(strom.__path__, "strom.")
    if ">>>" in Path(importlib.util.find_spec(info.name).origin or "").read_text(encoding="utf-8")  # type: ignore[union-attr]
)


def test_some_docstrings_have_examples() -> None:
    assert {"strom.pipeline", "strom.pipeline.windows"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
