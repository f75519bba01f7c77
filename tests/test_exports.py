"""The public API is deliberate: changing it must change this test."""

import strom
import strom.broker


def test_top_level_exports() -> None:
    assert sorted(strom.__all__) == ["Broker", "BrokerConfig", "__version__"]
    for name in strom.__all__:
        assert hasattr(strom, name)


def test_broker_exports() -> None:
    assert sorted(strom.broker.__all__) == ["Broker", "BrokerConfig", "BrokerRuntime"]
