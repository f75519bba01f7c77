"""Define a pipeline once as a logical plan; run it with ``strom.runtime`` or ``strom.bounded``.

Pipeline authors import from ``strom``; this package's ``__all__`` adds the plan's types for
tools, and its modules are internal.

>>> from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg
>>> p = Pipeline()
>>> src = MemorySource([[{"ts": 1_000, "k": "a", "v": 2}, {"ts": 11_000, "k": "a", "v": 5}]])
>>> out = p.source(src, timestamp="ts").key_by("k").window(Tumbling(10_000)).agg(agg.sum("v"))
>>> out.sink(sink := MemorySink())
>>> plan = p.plan()
"""

from strom.engine.aggregation import Agg
from strom.engine.contracts import (
    END_OF_PARTITION,
    BoundedSource,
    EndOfPartition,
    LookupTable,
    Sink,
    Source,
    SourcePartition,
)
from strom.pipeline import agg
from strom.pipeline.plan import Plan
from strom.pipeline.process import (
    ListState,
    MapState,
    ProcessContext,
    ProcessFunction,
    ValueState,
)
from strom.pipeline.stream import (
    AsofJoinResult,
    IntervalJoinResult,
    KeyedStream,
    Pipeline,
    Stream,
    WindowedStream,
    WindowResult,
)
from strom.pipeline.validate import PlanError
from strom.pipeline.windows import Hopping, Session, Tumbling, WindowSpec

__all__ = [
    "END_OF_PARTITION",
    "Agg",
    "AsofJoinResult",
    "BoundedSource",
    "EndOfPartition",
    "Hopping",
    "IntervalJoinResult",
    "KeyedStream",
    "ListState",
    "LookupTable",
    "MapState",
    "Pipeline",
    "Plan",
    "PlanError",
    "ProcessContext",
    "ProcessFunction",
    "Session",
    "Sink",
    "Source",
    "SourcePartition",
    "Stream",
    "Tumbling",
    "ValueState",
    "WindowResult",
    "WindowSpec",
    "WindowedStream",
    "agg",
]
