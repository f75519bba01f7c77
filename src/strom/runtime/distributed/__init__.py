"""Multi-worker runs of the streaming runtime (internal).

``workers`` runs one worker's share of a plan (static ``p % N`` partition shares);
``plan_split`` rewrites the plan for worker ``i`` of ``N`` (``shares``: its share of each
source); ``shuffle`` is the seam through which rows move between workers, and ``repartition``
its Kafka implementation: repartition topics with per-writer watermark progress records, so
each key's state lives in one worker.
"""
