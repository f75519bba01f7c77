"""Transactions are not implemented yet: a transactional producer fails fast and clearly."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from strom.broker import Broker


def test_init_transactions_fails_immediately(strom_broker: Broker) -> None:
    producer = Producer(
        {"bootstrap.servers": strom_broker.bootstrap_servers, "transactional.id": "tx-1"}
    )
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(10)
    error = raised.value.args[0]
    assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    assert error.fatal()
    # An idempotent (non-transactional) producer on the same broker still works.
    idempotent = Producer(
        {"bootstrap.servers": strom_broker.bootstrap_servers, "enable.idempotence": True}
    )
    idempotent.produce("after-txn", b"ok")
    assert idempotent.flush(10) == 0
