"""Sources and sinks. Each states its delivery guarantee in its docstring.

Import them from ``strom``; the submodules (``kafka/``, ``sql/``, ``files``, ...) are internal.
Each implements the contracts of :mod:`strom.engine.contracts`.

The PostgreSQL connectors need the ``postgres`` extra; they are imported on first use, so
``strom.connectors`` works without it and ``from strom.connectors import PostgresSink`` says
what to install.
"""

from typing import TYPE_CHECKING

from strom.connectors.console import ConsoleSink
from strom.connectors.deadletter import DEAD_LETTER_SCHEMA
from strom.connectors.files import FileFormat, FileReadError, FileSink, FileSource
from strom.connectors.generator import GeneratorSource
from strom.connectors.kafka.common import KafkaConnectorError
from strom.connectors.kafka.sink import KafkaSink
from strom.connectors.kafka.source import KafkaSource
from strom.connectors.memory import MemorySink, MemorySource
from strom.connectors.sql.sqlite_lookup import SQLiteTable
from strom.connectors.sql.sqlite_sink import SQLiteSink

if TYPE_CHECKING:
    from strom.connectors.sql.postgres import PostgresConnectionError
    from strom.connectors.sql.postgres_lookup import PostgresTable
    from strom.connectors.sql.postgres_sink import PostgresSink

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "ConsoleSink",
    "FileFormat",
    "FileReadError",
    "FileSink",
    "FileSource",
    "GeneratorSource",
    "KafkaConnectorError",
    "KafkaSink",
    "KafkaSource",
    "MemorySink",
    "MemorySource",
    "PostgresConnectionError",
    "PostgresSink",
    "PostgresTable",
    "SQLiteSink",
    "SQLiteTable",
]

_POSTGRES = {
    "PostgresConnectionError": "strom.connectors.sql.postgres",
    "PostgresSink": "strom.connectors.sql.postgres_sink",
    "PostgresTable": "strom.connectors.sql.postgres_lookup",
}


def __getattr__(name: str) -> object:
    if name in _POSTGRES:  # imports psycopg: ImportError with the pip command if it is missing
        import importlib

        return getattr(importlib.import_module(_POSTGRES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
