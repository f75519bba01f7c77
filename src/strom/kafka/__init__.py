"""Kafka's wire protocol, shared by strom's broker and strom's own Kafka client (internal).

:mod:`strom.kafka.protocol` is sans-IO: framing, spec-driven request/response codecs, record
batches, compression and error codes. Neither side imports the other: the broker
(:mod:`strom.broker`) and the client (:mod:`strom.connectors.kafka`) both import this package.
"""
