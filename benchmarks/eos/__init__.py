"""What exactly-once costs: throughput, latency and checkpoint cost (``strom bench eos``)."""
