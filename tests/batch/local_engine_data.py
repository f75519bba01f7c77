"""Input files for the local engine's tests: seeded events spread over many files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl


def write_events(
    directory: Path,
    *,
    files: int = 12,
    rows: int = 3_000,
    keys: int = 40,
    seed: int = 7,
    format: str = "parquet",
    span_ms: int = 200_000,
) -> Path:
    """``files`` files of ``rows`` events each (``ts`` ms, key ``k``, ``v`` with some nulls,
    ``cat`` strings; ties in ``ts`` on purpose, so first/last tie-breaking matters)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(files):
        v = rng.normal(10, 3, rows).round(3)
        frame = pl.DataFrame(
            {
                "ts": rng.integers(0, span_ms // 50, rows) * 50,
                "k": rng.integers(0, keys, rows),
                "v": pl.Series(v).set(pl.Series(rng.random(rows) < 0.05), None),
                "cat": rng.choice(["a", "b", "c"], rows),
            }
        )
        path = directory / f"part-{i:05d}.{format}"
        if format == "parquet":
            frame.write_parquet(path)
        elif format == "csv":
            frame.write_csv(path)
        else:
            frame.write_ndjson(path)
    return directory
