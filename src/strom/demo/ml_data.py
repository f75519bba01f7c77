"""The ML demo's data: NASA's Shuttle sensor readings (real values, real labels) laid out over
synthetic devices and times, split into a history (Parquet files) and a live part (Kafka).

**What is real.** The nine sensor values ``f1``..``f9`` of each reading and its label
``anomaly`` are the Statlog (Shuttle) data as river's wheel bundles it (``shuttle.csv.gz``:
49,097 readings, 3,511 anomalies; read from the installed package, never downloaded).

**What is synthetic** (a pure function of the seed): which device a reading belongs to (readings
in the data set's order, dealt to devices by a seeded shuffle), its event time (each device
reports every 10-30 s, from :data:`T0`), the devices table (site, model), the split (the last
:data:`LIVE_SHARE` of event time is live), and the live stream's disorder: readings jittered
within the out-of-order bound, :data:`LATE_P` of them produced :data:`LATE_DELAY_MS` behind
(late), and :data:`MALFORMED_P` extra records that are not readings (dead letters).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

#: Simulated event time of the first reading (2023-11-14T22:13:20Z).
T0 = 1_700_000_000_000
SENSORS = tuple(f"f{i}" for i in range(1, 10))
WINDOW_MS = 120_000
OUT_OF_ORDER_MS = 5_000
LATE_DELAY_MS = 600_000
LATE_P = 0.01
MALFORMED_P = 0.003
LIVE_SHARE = 0.25
PARTITIONS = 3
#: A reading far in the future closing every partition's windows (filtered out before the view).
END_DEVICE = "~end"
SITES = ("houston", "kennedy", "vandenberg", "white-sands")
MODELS = ("IMU-3", "APU-7", "RCS-2")

READING = pl.Schema(
    {
        "seq": pl.Int64(),
        "ts": pl.Int64(),
        "device": pl.String(),
        **dict.fromkeys(SENSORS, pl.Float64()),
    }
)


def shuttle_path() -> Path:
    """``shuttle.csv.gz`` inside the installed river package (found without importing it)."""
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "strom demo reads NASA's Shuttle data bundled in river's wheel: pip install 'strom[ml]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "shuttle.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed river package")
    return path


def load_shuttle(rows: int | None = None) -> pl.DataFrame:
    """The Shuttle readings in the data set's order (``rows``: only the first ones)."""
    with gzip.open(shuttle_path(), "rb") as f:
        frame = pl.read_csv(f.read(), n_rows=rows)
    return frame.select(*(pl.col(s).cast(pl.Float64) for s in SENSORS), pl.col("anomaly") == 1)


@dataclass(frozen=True)
class Layout:
    """The data laid out: ``history`` and ``live`` readings (with ``anomaly``), the devices."""

    history: pl.DataFrame
    live: pl.DataFrame
    devices: pl.DataFrame


def lay_out(shuttle: pl.DataFrame, devices: int, seed: int) -> Layout:
    """Deal the readings to ``devices`` devices and give them event times (see the module)."""
    rng = np.random.default_rng(seed)
    owner = rng.permutation(np.arange(shuttle.height) % devices)
    gaps = rng.integers(10_000, 30_001, shuttle.height)
    frame = shuttle.with_columns(
        seq=pl.int_range(pl.len(), dtype=pl.Int64),
        device=pl.lit("dev-") + pl.Series(owner).cast(pl.String).str.zfill(3),
        gap=pl.Series(gaps, dtype=pl.Int64),
    )
    frame = frame.with_columns(ts=T0 + pl.col("gap").cum_sum().over("device")).drop("gap")
    frame = frame.select(*READING, "anomaly").sort("ts", "seq")
    cut = int(frame["ts"].quantile(1 - LIVE_SHARE))  # type: ignore[arg-type]
    cut -= cut % WINDOW_MS  # a window boundary (windows align to the epoch): none spans the cut
    names = sorted(frame["device"].unique())
    table = pl.DataFrame(
        {
            "device": names,
            "site": [SITES[i % len(SITES)] for i in range(len(names))],
            "model": [MODELS[int(rng.integers(len(MODELS)))] for _ in names],
        }
    )
    return Layout(frame.filter(pl.col("ts") < cut), frame.filter(pl.col("ts") >= cut), table)


def write_history(history: pl.DataFrame, folder: Path) -> list[Path]:
    """One Parquet file per device and hour of event time: ``folder/<device>/h<NNN>.parquet``."""
    hour = ((pl.col("ts") - T0) // 3_600_000).alias("hour")
    paths = []
    for (device, h), part in history.with_columns(hour).group_by("device", "hour"):
        path = folder / str(device) / f"h{int(h):03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part.drop("hour").write_parquet(path)
        paths.append(path)
    return sorted(paths)


@dataclass(frozen=True)
class LiveRecords:
    """The live stream in produce order: one entry per Kafka record."""

    partition: np.ndarray  # int, the Kafka partition
    ts: np.ndarray  # int, event time (the marker's for a malformed record: -1)
    values: list[bytes]
    keys: list[bytes]
    late: pl.Series  # seqs of the readings produced LATE_DELAY_MS behind
    malformed: int


def live_records(live: pl.DataFrame, devices: pl.DataFrame, seed: int) -> LiveRecords:
    """The live readings as JSON records, disordered (see the module), then one far-future
    :data:`END_DEVICE` reading per partition so every real window closes."""
    rng = np.random.default_rng(seed + 1)
    n = live.height
    late = rng.random(n) < LATE_P
    # produce order: by event time plus a jitter below the bound (never late), or plus the
    # late delay (late once every partition's watermark is past its window)
    order_key = live["ts"].to_numpy() + rng.integers(0, OUT_OF_ORDER_MS, n)
    order_key = np.where(late, live["ts"].to_numpy() + LATE_DELAY_MS, order_key)
    index = {d: i for i, d in enumerate(devices["device"])}
    rows = live.select(*READING).rows()
    records = [
        (
            int(k),
            index[r[2]] % PARTITIONS,
            int(r[1]),
            json.dumps(dict(zip(READING, r, strict=True))),
            r[2],
        )
        for k, r in zip(order_key, rows, strict=True)
    ]
    for i in range(int(n * MALFORMED_P) + 1):
        at = int(rng.integers(int(order_key.min()), int(order_key.max()) + 1))
        bad = ['{"seq": "x"', "not json", '{"ts": 1}'][i % 3]
        records.append((at, i % PARTITIONS, -1, bad, "?"))
    records.sort(key=lambda r: r[0])
    end = int(live["ts"].max()) + 86_400_000  # type: ignore[arg-type]
    for p in range(PARTITIONS):
        marker: dict[str, object] = {"seq": -1 - p, "ts": end, "device": END_DEVICE}
        marker |= dict.fromkeys(SENSORS, 0.0)
        records.append((end, p, end, json.dumps({k: marker[k] for k in READING}), END_DEVICE))
    return LiveRecords(
        partition=np.array([r[1] for r in records]),
        ts=np.array([r[2] for r in records]),
        values=[r[3].encode() for r in records],
        keys=[r[4].encode() for r in records],
        late=live.filter(pl.Series(late))["seq"],
        malformed=int(n * MALFORMED_P) + 1,
    )
