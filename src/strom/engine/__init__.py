"""The engine's contracts and the backend-neutral semantics every backend shares (internal)."""
