"""The streaming runtime: runs a pipeline's plan incrementally, one micro-batch at a time.

Use it through ``strom`` (``run_streaming``, ``run_bounded``); the submodules are internal.
"""

from strom.runtime.checkpoints import CheckpointError
from strom.runtime.executor import StreamingExecutor, run_streaming
from strom.runtime.results import latest
from strom.runtime.snapshots import ExecutorSnapshot
from strom.runtime.watermarks import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    WatermarkTracker,
    combine_watermarks,
    partition_watermark,
)

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "CheckpointError",
    "ExecutorSnapshot",
    "StreamingExecutor",
    "WatermarkTracker",
    "combine_watermarks",
    "latest",
    "partition_watermark",
    "run_streaming",
]
