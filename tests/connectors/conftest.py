"""Fixtures for the connector tests: a real PostgreSQL server (see ``postgres_server.py``)."""

from postgres_server import postgres_dsn, postgres_server

__all__ = ["postgres_dsn", "postgres_server"]
