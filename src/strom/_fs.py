"""Durability helpers shared by the broker's log, the checkpoint store, file sinks, the batch
engine's commit and the model store (internal)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_path"]


def fsync_path(path: Path | str) -> None:
    """fsync a file (its data) or a directory (the creations, renames and deletions in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
