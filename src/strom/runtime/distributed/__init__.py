"""Multi-worker runs of the streaming runtime (internal).

``workers`` runs one worker's share of a plan (static ``p % N`` partition shares);
``repartition`` moves rows between workers through repartition topics, with per-writer
watermark progress records, so each key's state lives in one worker.
"""
