"""Window operators of the streaming runtime (internal).

``base`` is what every window operator shares (watermarks, lateness, late outputs);
``time_windows`` runs tumbling and hopping windows and ``sessions`` session windows, both on
columnar state (``state`` rows per key and window, ``slots`` NumPy accumulator slots merged
vectorized); ``accumulators`` lays out the aggregations' slots, whose rules are the
aggregation classes of :mod:`strom.engine.aggregations`.
"""
