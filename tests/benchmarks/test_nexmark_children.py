"""The peer child scripts run in the peers' own virtualenvs without strom, so they keep their own
copy of the suite's constants (``peers/children/_common.py``); it must match the suite's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from benchmarks.nexmark import queries
from benchmarks.nexmark.load import TOPICS

COMMON = Path(queries.__file__).parent / "peers" / "children" / "_common.py"


def test_the_children_share_the_suites_constants() -> None:
    spec = importlib.util.spec_from_file_location("nexmark_children_common", COMMON)
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert common.TOPICS == TOPICS
    assert common.INPUTS == queries.INPUTS
    assert common.WINDOW_MS == queries.WINDOW_MS
    assert common.SLIDE_MS == queries.SLIDE_MS
    assert common.OUT_OF_ORDERNESS_MS == queries.OUT_OF_ORDERNESS_MS
