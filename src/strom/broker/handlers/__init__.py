"""Request handlers, one module per API family. Importing them fills the registry."""

from __future__ import annotations

import importlib

__all__ = ["load_handlers"]

_MODULES = (
    "api_versions",
    "metadata",
    "produce",
    "fetch",
    "list_offsets",
    "admin",
    "groups",
    "transactions",
)


def load_handlers() -> None:
    """Import every handler module once, registering its APIs."""
    for name in _MODULES:
        importlib.import_module(f"strom.broker.handlers.{name}")
