"""The streaming runtime: runs a pipeline's plan incrementally, one micro-batch at a time.

Use it through ``strom`` (``run_streaming``, ``run_bounded``); the submodules are internal.
Names are imported on first use (:mod:`strom._lazy`), so the batch engine can use the window
state modules without loading the executor.
"""

from typing import TYPE_CHECKING

from strom._lazy import lazy_exports

if TYPE_CHECKING:
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

if not TYPE_CHECKING:  # type checkers read the imports above (and flag unknown names)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "CheckpointError": "strom.runtime.checkpoints",
            "ExecutorSnapshot": "strom.runtime.snapshots",
            "MAX_WATERMARK": "strom.runtime.watermarks",
            "MIN_WATERMARK": "strom.runtime.watermarks",
            "StreamingExecutor": "strom.runtime.executor",
            "WatermarkTracker": "strom.runtime.watermarks",
            "combine_watermarks": "strom.runtime.watermarks",
            "latest": "strom.runtime.results",
            "partition_watermark": "strom.runtime.watermarks",
            "run_streaming": "strom.runtime.executor",
        },
    )
