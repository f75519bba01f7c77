"""Test harnesses for users' own test suites: an in-process broker fixture.

With strom installed, pytest picks up the ``strom_broker`` fixture automatically::

    def test_my_pipeline(strom_broker):
        produce(strom_broker.bootstrap_servers, ...)

Outside pytest, use :class:`strom.broker.Broker` as a context manager.
"""

from strom.broker.embedded import Broker

__all__ = ["Broker"]
