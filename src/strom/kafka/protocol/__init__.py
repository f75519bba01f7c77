"""Sans-IO Kafka protocol: bytes in, typed requests out; responses to bytes (internal)."""
