"""The bounded runner: a pipeline's plan run to completion over bounded sources."""

from strom.bounded.runner import BoundedRunner, run_bounded

__all__ = ["BoundedRunner", "run_bounded"]
