"""The handler registry: one entry per Kafka API that strom implements.

A handler is an async function from a decoded request body (a dict, see
:mod:`strom.kafka.protocol.codec`) to a response body dict, or ``None`` when Kafka sends no
response (produce with ``acks=0``). Only what is registered here is advertised by ApiVersions,
because clients change behaviour on what a broker advertises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strom.kafka.protocol.codec import versions_of
from strom.kafka.protocol.framing import RequestHeader

if TYPE_CHECKING:
    from strom.broker.state import BrokerState

__all__ = ["REGISTRY", "Api", "Context", "Handler", "api"]


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler knows about the request besides its body."""

    state: BrokerState
    header: RequestHeader
    client_host: str

    @property
    def version(self) -> int:
        return self.header.api_version


Body = dict[str, Any]
Handler = Callable[[Context, Body], Awaitable[Body | None]]


@dataclass(frozen=True, slots=True)
class Api:
    key: int
    name: str
    min_version: int
    max_version: int
    handler: Handler

    @property
    def request(self) -> str:
        return f"{self.name}Request"

    @property
    def response(self) -> str:
        return f"{self.name}Response"


REGISTRY: dict[int, Api] = {}


def api(key: int, name: str, min_version: int, max_version: int) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``name`` (a spec name without Request/Response) and versions."""
    spec_range = versions_of(f"{name}Request")
    if min_version not in spec_range or max_version not in spec_range:
        raise ValueError(f"{name} {min_version}-{max_version} is outside the spec")

    def register(handler: Handler) -> Handler:
        if key in REGISTRY:
            raise ValueError(f"API {key} registered twice")
        REGISTRY[key] = Api(key, name, min_version, max_version, handler)
        return handler

    return register
