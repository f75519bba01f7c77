"""Sources and sinks. Each states its delivery guarantee in its docstring.

Kafka, SQL and generator connectors are not implemented yet.
"""

from strom.connectors.console import ConsoleSink
from strom.connectors.files import FileFormat, FileSink, FileSource
from strom.connectors.memory import MemorySink, MemorySource

__all__ = ["ConsoleSink", "FileFormat", "FileSink", "FileSource", "MemorySink", "MemorySource"]
