"""strom: large datasets and real-time streams for ML, in one package.

Everything a pipeline author needs is importable from here::

    from strom import Pipeline, Tumbling, agg, KafkaSource, SQLiteSink, run_streaming

This module's ``__all__`` is the public API (a test pins it); every other module is internal
and may change. Optional extras stay optional: ``PostgresSink`` and ``PostgresTable`` import
psycopg only when first used (and name the ``pip install`` to run if it is missing), and
``import strom`` loads neither numba (strom's Kafka kernels load with the first Kafka read)
nor any other extra.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from strom.bounded import run_bounded
from strom.broker import Broker, BrokerConfig
from strom.connectors import (
    ConsoleSink,
    FileSink,
    FileSource,
    GeneratorSource,
    KafkaSink,
    KafkaSource,
    MemorySink,
    MemorySource,
    SQLiteSink,
    SQLiteTable,
)
from strom.pipeline import (
    Hopping,
    ListState,
    MapState,
    Pipeline,
    PlanError,
    ProcessContext,
    ProcessFunction,
    Session,
    Tumbling,
    ValueState,
    agg,
)
from strom.runtime import CheckpointError, StreamingExecutor, run_streaming

if TYPE_CHECKING:
    from strom.connectors import PostgresSink, PostgresTable

try:
    __version__ = version("strom")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = [
    "Broker",
    "BrokerConfig",
    "CheckpointError",
    "ConsoleSink",
    "FileSink",
    "FileSource",
    "GeneratorSource",
    "Hopping",
    "KafkaSink",
    "KafkaSource",
    "ListState",
    "MapState",
    "MemorySink",
    "MemorySource",
    "Pipeline",
    "PlanError",
    "PostgresSink",
    "PostgresTable",
    "ProcessContext",
    "ProcessFunction",
    "SQLiteSink",
    "SQLiteTable",
    "Session",
    "StreamingExecutor",
    "Tumbling",
    "ValueState",
    "__version__",
    "agg",
    "run_bounded",
    "run_streaming",
]

_LAZY = {"PostgresSink", "PostgresTable"}


def __getattr__(name: str) -> object:
    if name in _LAZY:  # imports psycopg: an ImportError naming the extra if it is missing
        return getattr(importlib.import_module("strom.connectors"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
