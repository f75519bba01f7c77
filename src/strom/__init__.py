"""strom: large datasets and real-time streams for ML, in one package.

Everything a pipeline author needs is importable from here::

    from strom import Pipeline, Tumbling, agg, KafkaSource, SQLiteSink, run_streaming

This module's ``__all__`` is the public API (a test pins it); every other module is internal
and may change. Each name is imported when first read (:mod:`strom._lazy`), so ``import
strom`` is cheap and importing one submodule (a batch worker importing the local engine) does
not load the rest. Optional extras stay optional: ``PostgresSink`` and ``PostgresTable`` import
psycopg only when first used (and name the ``pip install`` to run if it is missing), and
``import strom`` loads neither numba (strom's Kafka kernels load with the first Kafka read)
nor any other extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from strom._lazy import lazy_exports

if TYPE_CHECKING:
    from strom._version import __version__
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
        PostgresSink,
        PostgresTable,
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

_MODULES = {
    "strom._version": ["__version__"],
    "strom.bounded": ["run_bounded"],
    "strom.broker": ["Broker", "BrokerConfig"],
    "strom.connectors": [
        "ConsoleSink",
        "FileSink",
        "FileSource",
        "GeneratorSource",
        "KafkaSink",
        "KafkaSource",
        "MemorySink",
        "MemorySource",
        "PostgresSink",
        "PostgresTable",
        "SQLiteSink",
        "SQLiteTable",
    ],
    "strom.pipeline": [
        "Hopping",
        "ListState",
        "MapState",
        "Pipeline",
        "PlanError",
        "ProcessContext",
        "ProcessFunction",
        "Session",
        "Tumbling",
        "ValueState",
        "agg",
    ],
    "strom.runtime": ["CheckpointError", "StreamingExecutor", "run_streaming"],
}
if not TYPE_CHECKING:  # type checkers read the imports above (and flag unknown names)
    __getattr__, __dir__ = lazy_exports(
        __name__, {name: module for module, names in _MODULES.items() for name in names}
    )
