"""Kafka connectors: :class:`KafkaSource` and :class:`KafkaSink` (import them from ``strom``).

Modules (internal): ``source`` and ``sink`` are the connectors; ``batch`` turns fetched records
into columns and dead letters; ``common`` holds what both share (configuration, bounded waits,
errors). Two clients fetch: ``native_*`` is strom's own (``native_cluster`` metadata and
leaders, ``native_wire`` requests over :mod:`strom.kafka.protocol`, ``native_fetch`` pipelined
Fetch, ``native_records`` and ``native_json`` the compiled record-batch and JSON kernels,
``kernels`` their numba helpers); ``librdkafka_fetch`` is confluent-kafka's.
"""
