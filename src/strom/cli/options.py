"""Options shared by the client commands, named as Kafka's own tools name them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["bootstrap_option", "parse_host_port"]

F = TypeVar("F", bound=Callable[..., Any])


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def bootstrap_option(func: F) -> F:
    return click.option(
        "--bootstrap-server",
        "bootstrap_server",
        default="localhost:9092",
        show_default=True,
        metavar="HOST:PORT",
        help="The broker to connect to (strom's or any Kafka cluster's).",
    )(func)
