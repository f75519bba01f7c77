"""Sources and sinks. Each states its delivery guarantee in its docstring.

Import them from ``strom``; the submodules (``kafka/``, ``sql/``, ``files``, ...) are internal.
Each implements the contracts of :mod:`strom.engine.contracts`.

Every name is imported on first use (:mod:`strom._lazy`): reading files does not load the
Kafka client. The PostgreSQL connectors need the ``postgres`` extra, so ``strom.connectors``
works without it and ``from strom.connectors import PostgresSink`` says what to install.
"""

from typing import TYPE_CHECKING

from strom._lazy import lazy_exports

if TYPE_CHECKING:
    from strom.connectors.console import ConsoleSink
    from strom.connectors.deadletter import DEAD_LETTER_SCHEMA
    from strom.connectors.files import FileFormat, FileReadError, FileSink, FileSource
    from strom.connectors.generator import GeneratorSource
    from strom.connectors.kafka.common import KafkaConnectorError
    from strom.connectors.kafka.sink import KafkaSink
    from strom.connectors.kafka.source import KafkaSource
    from strom.connectors.memory import MemorySink, MemorySource
    from strom.connectors.sql.postgres import PostgresConnectionError
    from strom.connectors.sql.postgres_lookup import PostgresTable
    from strom.connectors.sql.postgres_sink import PostgresSink
    from strom.connectors.sql.sqlite_lookup import SQLiteTable
    from strom.connectors.sql.sqlite_sink import SQLiteSink

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

if not TYPE_CHECKING:  # type checkers read the imports above (and flag unknown names)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "DEAD_LETTER_SCHEMA": "strom.connectors.deadletter",
            "ConsoleSink": "strom.connectors.console",
            "FileFormat": "strom.connectors.files",
            "FileReadError": "strom.connectors.files",
            "FileSink": "strom.connectors.files",
            "FileSource": "strom.connectors.files",
            "GeneratorSource": "strom.connectors.generator",
            "KafkaConnectorError": "strom.connectors.kafka.common",
            "KafkaSink": "strom.connectors.kafka.sink",
            "KafkaSource": "strom.connectors.kafka.source",
            "MemorySink": "strom.connectors.memory",
            "MemorySource": "strom.connectors.memory",
            # these import psycopg: an ImportError with the pip command if it is missing
            "PostgresConnectionError": "strom.connectors.sql.postgres",
            "PostgresSink": "strom.connectors.sql.postgres_sink",
            "PostgresTable": "strom.connectors.sql.postgres_lookup",
            "SQLiteSink": "strom.connectors.sql.sqlite_sink",
            "SQLiteTable": "strom.connectors.sql.sqlite_lookup",
        },
    )
