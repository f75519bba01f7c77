"""Constants every backend agrees on: column names (the window results' own columns and the
internal ones) and the bounds of event time.

Internal columns start with ``__strom_``; an executor adds them to frames it works on and drops
them before rows leave an operator, so a user never sees them.
"""

from __future__ import annotations

WINDOW_START = "window_start"
WINDOW_END = "window_end"
IS_UPDATE = "is_update"
WINDOW_COLUMNS = (WINDOW_START, WINDOW_END, IS_UPDATE)
"""The columns a window result has besides its keys and aggregations (so names they cannot
take): ``[window_start, window_end)`` in epoch ms, and whether the row supersedes an earlier
result for the same window."""

TS = "__strom_ts"
"""An event's time in epoch milliseconds (Int64), whatever its event-time column's type."""
SEQ = "__strom_seq"
"""An event's position within its source partition's stream (Int64, from 0)."""
PART = "__strom_part"
"""An event's source partition, numbered across every source of the plan (Int64)."""
SESSION = "__strom_session"
"""The number of an event's session after :func:`strom.engine.sessions.cut_sessions`."""
LEFT_TS = "__strom_left_ts"
RIGHT_TS = "__strom_right_ts"
"""The two sides' event times (epoch ms) while an interval join pairs them."""
LOOKUP_KEY = "__strom_lookup_key"
"""The table's key column while a lookup join joins its rows to the stream's."""
GLOBAL_KEY = "__strom_global"
"""The one constant key of an aggregation over the whole stream (:meth:`Stream.agg`)."""

MIN_WATERMARK = -(2**63)
"""The watermark before any event (nothing is known to have arrived)."""
MAX_WATERMARK = 2**63 - 1
"""The watermark once every input has ended (every event has arrived)."""
