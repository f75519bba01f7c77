"""SQL connectors (internal modules; import the classes from ``strom``).

``table_sink`` (what the sinks share), ``two_phase`` (their exactly-once bookkeeping),
``sqlite_sink`` and ``sqlite_lookup`` need nothing beyond Python; ``postgres`` (connections and
errors), ``postgres_sink`` and ``postgres_lookup`` need the ``postgres`` extra (psycopg) and
import it only when used.
"""
