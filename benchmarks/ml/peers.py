"""The ML benchmark's peers: Quix Streams and Bytewax, each with scikit-learn and skops.

They run in virtualenvs of their own (as every peer does, :mod:`benchmarks.nexmark.peers._venv`),
pinned to the peer's version the other suites use and to the scikit-learn and skops versions of
strom's own environment, so the peers load the very model file strom's model store holds and
compute the same scores bit for bit.
"""

from __future__ import annotations

from importlib.metadata import version

from benchmarks.nexmark.peers._peers import BYTEWAX, QUIX
from benchmarks.nexmark.peers._venv import VenvSpec

__all__ = ["ml_peers"]


def _with_ml(spec: VenvSpec, child: str) -> tuple[VenvSpec, str]:
    libraries = (f"scikit-learn=={version('scikit-learn')}", f"skops=={version('skops')}")
    return (
        VenvSpec(
            name=f"{spec.name}-ml",
            version=spec.version,
            requirements=(*spec.requirements, *libraries),
            check=f"{spec.check}, sklearn, skops.io",
        ),
        child,
    )


def ml_peers() -> tuple[tuple[VenvSpec, str], ...]:
    """(venv spec, child script in ``children/``) of each peer."""
    return (_with_ml(QUIX, "quix_child.py"), _with_ml(BYTEWAX, "bytewax_child.py"))
