"""The engine's contracts and the backend-neutral semantics every backend shares.

:mod:`strom.engine.contracts` is public, for authors of connectors and operators (its
``__all__`` is pinned by a test); the other modules are internal.
"""
