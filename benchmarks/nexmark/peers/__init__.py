"""Nexmark peers: the same queries in Quix Streams, Bytewax and PyFlink, beside strom.

Each peer is installed on demand into a pinned virtualenv of its own (see ``_venv``) and runs
every query in a child process, so its CPU is its own. Quix Streams and Bytewax read the
``nexmark-*`` topics from the strom broker up to their end offsets; PyFlink runs on its local
mini-cluster over the generated NDJSON files. A peer that cannot express a query returns
``na_reason`` (never a figure for another query)::

    for peer in available_peers():
        if peer.version() is None:
            print(peer.name, "skipped:", peer.unavailable_reason())
            continue
        run = peer.run("q1", bootstrap, events_dir, timeout_s=600)
"""

from __future__ import annotations

from benchmarks.nexmark.peers._peers import OUTPUT_SCHEMAS, Peer, PeerRun, all_peers

__all__ = ["OUTPUT_SCHEMAS", "Peer", "PeerRun", "available_peers", "per_core_ratio"]


def available_peers() -> list[Peer]:
    """Every peer this benchmark knows. Which can run here is only known once ``version()`` has
    tried to create its venv (None, with ``unavailable_reason()``, when it cannot)."""
    return all_peers()


def per_core_ratio(strom_events: int, strom_cpu_s: float, peer: PeerRun) -> float | None:
    """strom's events per CPU-second over the peer's, for the same query; None when the peer
    has no figure (n/a) or either side used no measurable CPU."""
    theirs = peer.events_per_core_s
    if theirs is None or strom_cpu_s <= 0:
        return None
    return (strom_events / strom_cpu_s) / theirs
