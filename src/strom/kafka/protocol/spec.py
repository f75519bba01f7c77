"""Apache Kafka's JSON message specs, loaded from the copy kafka-python ships as package data.

strom's codecs are generated from these specs (see :mod:`strom.kafka.protocol.codec`); nothing
here is transcribed by hand. kafka-python is only used as a carrier of the spec files: its package
is located without being imported.

kafka-python 3 ships Kafka 4's specs, which no longer list the request versions KIP-896 removed in
Kafka 4.0. Kafka 4 removed them by raising ``validVersions`` alone: every field kept its version
range, so the old versions' layouts are still fully described. :data:`KAFKA_3_9_LOWEST` restores
the lowest versions Kafka 3.9 (the last release to serve them) lists, and nothing else.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_COMMENT = re.compile(r"^\s*//.*$", re.MULTILINE)

# The lowest version of each message in Kafka 3.9's specs, where Kafka 4's are higher. Checked
# against Kafka 3.9.0's JSON files: for every version restored here, each field's presence, type,
# nullability and tagging is the same in both copies.
KAFKA_3_9_LOWEST: dict[str, int] = {
    "AlterReplicaLogDirs": 0,
    "CreateAcls": 0,
    "CreateTopics": 0,
    "DeleteAcls": 0,
    "DeleteTopics": 0,
    "DescribeAcls": 0,
    "DescribeConfigs": 0,
    "DescribeLogDirs": 0,
    "Fetch": 0,
    "ListOffsets": 0,
    "OffsetCommit": 0,
    "OffsetFetch": 0,
    "OffsetForLeaderEpoch": 0,
    "Produce": 0,
}


class SpecError(RuntimeError):
    """The message specs are missing or malformed."""


@dataclass(frozen=True, slots=True)
class VersionRange:
    """An inclusive range of versions; ``lo > hi`` means "none"."""

    lo: int
    hi: int

    @classmethod
    def parse(cls, text: str | None) -> VersionRange:
        if text is None or text == "none":
            return cls(1, 0)
        text = text.strip()
        if text.endswith("+"):
            return cls(int(text[:-1]), 1 << 15)
        if "-" in text:
            lo, hi = text.split("-", 1)
            return cls(int(lo), int(hi))
        return cls(int(text), int(text))

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.lo <= version <= self.hi


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a message or struct, as the JSON spec declares it."""

    name: str
    type: str
    versions: VersionRange
    nullable: VersionRange
    tagged: VersionRange
    tag: int | None
    flexible_override: VersionRange | None
    default: Any
    ignorable: bool
    fields: tuple[FieldSpec, ...] = field(default=())

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[2:] if self.is_array else self.type

    @property
    def is_struct(self) -> bool:
        return bool(self.fields) or self.element_type[:1].isupper()


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """A request, response or header schema."""

    name: str
    api_key: int | None
    kind: str
    valid: VersionRange
    flexible: VersionRange
    fields: tuple[FieldSpec, ...]


def spec_dir() -> Path:
    """The directory holding the JSON specs inside the installed kafka-python package."""
    found = importlib.util.find_spec("kafka")
    if found is None or not found.submodule_search_locations:
        raise SpecError("kafka-python (>= 3) is required: it ships Kafka's JSON message specs")
    path = Path(next(iter(found.submodule_search_locations))) / "protocol/schemas/resources"
    if not path.is_dir():
        raise SpecError(f"kafka-python at {path.parent} has no message specs; upgrade to >= 3")
    return path


def _default(raw: dict[str, Any]) -> Any:
    value = raw.get("default")
    typ = raw["type"]
    if typ.startswith("[]"):
        return None  # arrays default to empty; filled by the codec
    if value is None:
        if typ == "bool":
            return False
        if typ in ("int8", "int16", "int32", "int64", "uint16", "uint32"):
            return 0
        if typ == "float64":
            return 0.0
        if typ == "string":
            return ""
        if typ == "uuid":
            return b"\x00" * 16
        return None
    if typ == "bool":
        return str(value).lower() == "true"
    if typ in ("int8", "int16", "int32", "int64", "uint16", "uint32"):
        text = str(value)
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    if typ == "float64":
        return float(value)
    if typ == "string" and value == "null":
        return None
    return value


def _field(raw: dict[str, Any], structs: dict[str, list[dict[str, Any]]]) -> FieldSpec:
    children = raw.get("fields")
    if children is None:
        elem = raw["type"][2:] if raw["type"].startswith("[]") else raw["type"]
        children = structs.get(elem)
    flex = raw.get("flexibleVersions")
    return FieldSpec(
        name=raw["name"],
        type=raw["type"],
        versions=VersionRange.parse(raw.get("versions")),
        nullable=VersionRange.parse(raw.get("nullableVersions")),
        tagged=VersionRange.parse(raw.get("taggedVersions")),
        tag=raw.get("tag"),
        flexible_override=VersionRange.parse(flex) if flex is not None else None,
        default=_default(raw),
        ignorable=bool(raw.get("ignorable", False)),
        fields=tuple(_field(c, structs) for c in (children or [])),
    )


@functools.cache
def load(name: str) -> MessageSpec:
    """Load one spec by its name, e.g. ``"ProduceRequest"``."""
    path = spec_dir() / f"{name}.json"
    try:
        raw = json.loads(_COMMENT.sub("", path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise SpecError(f"no message spec named {name!r}") from exc
    structs = {s["name"]: s["fields"] for s in raw.get("commonStructs", [])}
    valid = VersionRange.parse(raw.get("validVersions"))
    lowest = KAFKA_3_9_LOWEST.get(name.removesuffix("Request").removesuffix("Response"))
    if lowest is not None and raw["type"] in ("request", "response"):
        valid = VersionRange(min(lowest, valid.lo), valid.hi)
    return MessageSpec(
        name=raw["name"],
        api_key=raw.get("apiKey"),
        kind=raw["type"],
        valid=valid,
        flexible=VersionRange.parse(raw.get("flexibleVersions")),
        fields=tuple(_field(f, structs) for f in raw["fields"]),
    )
