"""Reading window results: the latest value of every window."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def latest(results: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """Each window's latest result, given results in emission order.

    A row supersedes every earlier row of the same key whose window it contains: for tumbling
    and hopping windows that is the same window, for session windows also the sessions a merge
    absorbed. The result keeps the columns, in emission order of the surviving rows.
    """
    if results.height == 0:
        return results
    survivors: dict[tuple[object, ...], list[tuple[int, int, int]]] = {}
    for index, row in enumerate(results.select(*keys, "window_start", "window_end").iter_rows()):
        key, start, end = row[: len(keys)], row[-2], row[-1]
        kept = [w for w in survivors.get(key, []) if not (start <= w[0] and w[1] <= end)]
        kept.append((start, end, index))
        survivors[key] = kept
    rows = sorted(index for windows in survivors.values() for _, _, index in windows)
    return results[rows]
