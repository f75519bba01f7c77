"""Per-user features from order files, kept up to date in SQLite: a keyed aggregation without a
window.

Reads NDJSON orders ``{"ts": <epoch ms>, "user": "...", "item": "...", "amount": <float>}`` from
every file matching ``STROM_ORDERS`` and keeps one row per user in the SQLite table
``user_features`` (upserted, keyed by ``user``): the number of orders, the total and mean amount,
the largest one and the item of the latest order. ``strom run --engine stream`` processes the
files as a stream of micro-batches (each batch upserts the changed users' new values,
``is_update`` telling an insert from an update); ``strom run`` without ``--engine`` picks the
local batch engine for this all-files pipeline, and ``run_bounded(pipeline)`` computes the same
table in one group-by.

Run it::

    strom run --engine stream examples/user_features.py
    sqlite3 features.db 'select * from user_features'

Environment: ``STROM_ORDERS`` (default ``orders/*.ndjson``), ``STROM_SQLITE`` (default
``./features.db``).
"""

import os

from strom import FileSource, Pipeline, SQLiteSink, agg

ORDERS = os.environ.get("STROM_ORDERS", "orders/*.ndjson")
DATABASE = os.environ.get("STROM_SQLITE", "features.db")

pipeline = Pipeline()
orders = pipeline.source(FileSource(ORDERS, "ndjson", partitions=2), timestamp="ts")
features = orders.key_by("user").agg(
    agg.count(name="orders"),
    agg.sum("amount", name="total"),
    agg.mean("amount", name="mean_amount"),
    agg.max("amount", name="largest"),
    agg.last("item", name="last_item"),
)
features.sink(SQLiteSink(DATABASE, "user_features", key=["user"], mode="upsert"))
