"""A pipeline's fingerprint: what a checkpoint must match to be restored into a run.

It holds the operator ids (plan position and kind), each source's name, type and partition
count, each sink's type (in the executor's order) and each stateful operator's definition
(keys, window, aggregations, ...). A checkpoint of another fingerprint is refused with every
difference named: restoring it would misread state or positions silently. A sink's target (a
table, a topic) is not in it: sinks do not describe themselves uniformly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strom.runtime.executor import StreamingExecutor

__all__ = ["differences", "fingerprint"]


def fingerprint(executor: StreamingExecutor) -> dict[str, Any]:
    """``executor``'s pipeline fingerprint, as JSON."""
    sources = {node.name: node.source for node in executor.plan.sources()}
    definitions = {}
    for name, op in executor.stateful_operators().items():
        definition = getattr(op, "definition", None)
        definitions[name] = definition() if callable(definition) else None
    value = {
        "operators": executor.operator_ids(),
        "sources": {
            name: {"type": type(sources[name]).__qualname__, "partitions": count}
            for name, count in executor.source_partitions().items()
        },
        "sinks": [type(sink).__qualname__ for sink in executor.sinks()],
        "definitions": definitions,
    }
    # a JSON round trip: the manifest's copy and this one compare equal iff they match
    loaded: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return loaded


def differences(was: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What changed from fingerprint ``was`` (a checkpoint's) to ``now`` (the run's), one
    sentence each; empty if they match."""
    out = []
    ops_was, ops_now = list(was.get("operators", [])), list(now.get("operators", []))
    if ops_was != ops_now:
        removed = [o for o in ops_was if o not in ops_now]
        added = [o for o in ops_now if o not in ops_was]
        if removed or added:
            out.append(f"operators removed: {removed or 'none'}, added: {added or 'none'}")
        else:
            out.append(f"operators reordered: {ops_now} (was {ops_was})")
    src_was, src_now = dict(was.get("sources", {})), dict(now.get("sources", {}))
    for name in sorted(src_was.keys() | src_now.keys()):
        a, b = src_was.get(name), src_now.get(name)
        if a is None:
            out.append(f"source {name!r} is new")
        elif b is None:
            out.append(f"source {name!r} is gone")
        elif a != b:
            out.append(
                f"source {name!r} is a {b['type']} of {b['partitions']} partition(s), was a "
                f"{a['type']} of {a['partitions']}"
            )
    sinks_was, sinks_now = list(was.get("sinks", [])), list(now.get("sinks", []))
    if sinks_was != sinks_now:
        out.append(f"sinks are {sinks_now}, were {sinks_was}")
    defs_was, defs_now = dict(was.get("definitions", {})), dict(now.get("definitions", {}))
    for name in sorted(defs_was.keys() & defs_now.keys()):
        for path, a, b in _leaf_changes(defs_was[name], defs_now[name], ""):
            out.append(f"operator {name}: {path or 'definition'} is {json.dumps(b)}, was "
                       f"{json.dumps(a)}")  # fmt: skip
    return out


def _leaf_changes(was: Any, now: Any, path: str) -> list[tuple[str, Any, Any]]:
    """``(dotted path, old, new)`` of each differing value, descending into objects."""
    if isinstance(was, dict) and isinstance(now, dict):
        out = []
        for key in sorted(was.keys() | now.keys()):
            out += _leaf_changes(was.get(key), now.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if was == now else [(path, was, now)]
