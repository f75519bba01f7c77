"""Sources and sinks. Each states its delivery guarantee in its docstring.

PostgreSQL is not implemented yet.
"""

from strom.connectors.console import ConsoleSink
from strom.connectors.deadletter import DEAD_LETTER_SCHEMA
from strom.connectors.files import FileFormat, FileSink, FileSource
from strom.connectors.generator import GeneratorSource
from strom.connectors.kafka import KafkaSource, KafkaSourceMetrics
from strom.connectors.kafka_client import KafkaConnectorError
from strom.connectors.kafka_sink import KafkaSink
from strom.connectors.memory import MemorySink, MemorySource
from strom.connectors.sql import SQLiteSink
from strom.connectors.sql_lookup import SQLiteTable

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "ConsoleSink",
    "FileFormat",
    "FileSink",
    "FileSource",
    "GeneratorSource",
    "KafkaConnectorError",
    "KafkaSink",
    "KafkaSource",
    "KafkaSourceMetrics",
    "MemorySink",
    "MemorySource",
    "SQLiteSink",
    "SQLiteTable",
]
