"""The engine's optional dependency: importing it without the extra fails helpfully."""

from __future__ import annotations

try:
    import polars  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "strom's stream engine needs Polars and PyArrow: run \"pip install 'strom[engine]'\""
    ) from exc
