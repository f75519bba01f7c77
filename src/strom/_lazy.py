"""Lazy package exports: a package's public names imported on first use, not with the package.

Every ``import strom.x.y`` runs ``strom/__init__.py`` first, so an eager ``strom`` package made
each process pay for everything (the broker, the Kafka connectors, the streaming runtime) when
it needed one module: a local-engine worker spent ~0.5 s of its start on imports it never used.
A package built with :func:`lazy_exports` keeps its ``__all__`` and its names (``from strom
import Pipeline`` works as before, and type checkers see the names through the package's
``if TYPE_CHECKING:`` imports), but imports a name's module when the name is first read, and
caches it in the package so the lookup runs once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name in ``exports`` is read from the
    module ``exports[name]`` when first accessed (an ``ImportError`` it raises, such as a
    missing optional extra, reaches the caller unchanged)."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
