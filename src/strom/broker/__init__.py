"""strom's Kafka-compatible broker: durable log, consumer groups, admin; any Kafka client works."""

from strom.broker.config import BrokerConfig
from strom.broker.embedded import Broker
from strom.broker.runtime import BrokerRuntime

__all__ = ["Broker", "BrokerConfig", "BrokerRuntime"]
