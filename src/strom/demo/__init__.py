"""The end-to-end IoT scenario behind ``strom demo iot``: generator, pipeline, check and view."""

from strom.demo.check import Outcome, verify
from strom.demo.generator import DemoConfig, Generated, devices, generate
from strom.demo.scenario import DemoResult, run_demo

__all__ = [
    "DemoConfig",
    "DemoResult",
    "Generated",
    "Outcome",
    "devices",
    "generate",
    "run_demo",
    "verify",
]
