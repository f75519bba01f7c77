"""The public API is deliberate: changing it must change this test.

Users import from ``strom``; the subpackages' ``__all__`` are pinned too, since tools and
advanced users reach for them (``strom.pipeline.Plan``, ``strom.runtime.WatermarkTracker``).
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC = {
    "strom.ml": [
        "DEFAULT_TRUSTED",
        "FEATURE_TIME",
        "FeatureView",
        "ModelError",
        "ModelStore",
        "ModelVersion",
        "SkopsModel",
        "training_set",
    ],
    "strom": [
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
    ],
    "strom.pipeline": [
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
    ],
    "strom.connectors": [
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
    ],
    "strom.runtime": [
        "CheckpointError",
        "ExecutorSnapshot",
        "MAX_WATERMARK",
        "MIN_WATERMARK",
        "StreamingExecutor",
        "WatermarkTracker",
        "combine_watermarks",
        "latest",
        "partition_watermark",
        "run_streaming",
    ],
    "strom.bounded": ["BoundedRunner", "run_bounded"],
    "strom.batch": [
        "BadFileError",
        "JsonProgress",
        "LocalEngine",
        "PlainProgress",
        "Progress",
        "RichProgress",
        "RunReport",
        "TaskFailed",
        "run_local",
    ],
    # the contracts every connector and stateful operator implements (for connector authors)
    "strom.engine.contracts": [
        "AtLeastOnceSink",
        "BoundedSource",
        "CommitDecider",
        "CommitsPositions",
        "END_OF_PARTITION",
        "EndOfPartition",
        "FencedError",
        "Guarantee",
        "JSON",
        "LookupTable",
        "Metrics",
        "MetricsProvider",
        "OperatorState",
        "PollResult",
        "Position",
        "PositionError",
        "ProjectingSource",
        "SharesDecision",
        "SideOutputs",
        "Sink",
        "Source",
        "SourcePartition",
        "SourceShare",
        "StateError",
        "StatefulOperator",
        "StatefulSink",
        "WaitingSource",
        "WorkerSink",
        "int_field",
        "pack",
        "unpack",
    ],
    "strom.broker": ["Broker", "BrokerConfig", "BrokerRuntime"],
    "strom.testing": ["Broker"],
    # the Spark backend (the spark extra; ``import strom`` does not load it)
    "strom.spark": ["run_spark", "spark_session"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_all_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def test_top_level_names_are_the_subpackages_objects() -> None:
    """One object per name: ``strom.X`` is the class the subpackage defines, not a copy."""
    import strom.connectors
    import strom.pipeline

    assert strom.Pipeline is strom.pipeline.Pipeline
    assert strom.KafkaSource is strom.connectors.KafkaSource
    assert strom.PostgresSink is strom.connectors.PostgresSink  # resolved lazily
    assert "PostgresSink" in dir(strom)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = strom.Nope  # type: ignore[attr-defined]


def test_import_strom_loads_no_optional_weight() -> None:
    """``import strom`` (the whole public face), the CLI's ``run`` and a local-engine worker load
    neither numba, pyarrow (~30 MiB a process, which the local engine's memory budget feels) nor
    an extra."""
    code = (
        "import sys, strom, strom.cli.main, strom.cli.run, strom.batch.worker\n"
        "heavy = [m for m in ('numba', 'llvmlite', 'pyarrow', 'psycopg', 'pyspark', 'duckdb',"
        " 'sklearn', 'skops') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_packages_import_their_names_on_first_use() -> None:
    """``import strom`` imports nothing but itself, and a local-engine worker (which imports
    ``strom.batch.worker``, so every package ``__init__`` on the way) loads neither the broker,
    the Kafka connectors, the streaming executor nor the batch driver: each process pays only
    for what it runs (a worker's start is part of every local-engine job)."""
    code = (
        "import sys, strom\n"
        "print(sorted(m for m in sys.modules if m.startswith('strom.')))\n"
        "import strom.batch.worker\n"
        "print(sorted(m for m in sys.modules if m.startswith(('strom.broker', "
        "'strom.connectors.kafka', 'strom.runtime.executor', 'strom.batch.driver', "
        "'strom.bounded'))))\n"
        "from strom import KafkaSource\n"
        "print(KafkaSource.__module__, 'KafkaSource' in vars(strom))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "['strom._lazy']",
        "[]",
        "strom.connectors.kafka.source True",  # resolved once, then cached in the package
    ]


def test_the_engine_example_runs_from_the_top_level() -> None:
    from datetime import timedelta

    from strom import MemorySink, MemorySource, Pipeline, Tumbling, agg, run_bounded

    p = Pipeline()
    events = [{"ts": 1_000, "k": "a", "v": 2}, {"ts": 61_000, "k": "a", "v": 5}]
    sink = MemorySink()
    window = Tumbling(timedelta(minutes=1))
    p.source(MemorySource([events]), timestamp="ts").key_by("k").window(window).agg(
        agg.sum("v")
    ).sink(sink)
    run_bounded(p)
    assert sink.to_frame().sort("window_start")["window_start"].to_list() == [0, 60_000]
