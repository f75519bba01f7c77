"""The bounded runner: a pipeline's plan run to completion over bounded sources.

Use it through ``strom`` (``run_streaming``, ``run_bounded``); the submodules are internal.
"""

from strom.bounded.runner import BoundedRunner, run_bounded

__all__ = ["BoundedRunner", "run_bounded"]
