"""Deterministic IoT sensor readings: the demo's input, a pure function of its configuration.

Event time is simulated (it starts at :data:`T0`, not at the wall clock), so the same
``(seed, events, devices)`` always gives the same records, byte for byte. Reading ``seq`` is
produced ``seq * step_ms`` after :data:`T0`; its event time is that, except:

- **out of order** (:data:`JITTER_P`): up to ``OUT_OF_ORDER_MS - 1`` earlier. Such a reading is
  never late: its own partition's watermark is at most the production time minus the bound.
- **late** (:data:`LATE_P`): :data:`LATE_DELAY_MS` earlier, far beyond the out-of-order bound
  plus the allowed lateness — late once every partition's watermark has moved past it.
- **spikes**: a temperature far above the device's limit, or a vibration above
  :data:`VIBRATION_SPIKE` (each with probability :data:`SPIKE_P`).
- **malformed** (:data:`MALFORMED_P`): a record that is not a valid reading (dead letter).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import polars as pl

#: Simulated event time of reading 0 (2023-11-14T22:13:20Z).
T0 = 1_700_000_000_000
WINDOW_MS = 10_000
OUT_OF_ORDER_MS = 2_000
ALLOWED_LATENESS_MS = 5_000
LATE_DELAY_MS = (60_000, 90_000)
VIBRATION_SPIKE = 5.0
#: Readings per device per window, on average (sets the simulated time between readings).
READINGS_PER_WINDOW = 8
JITTER_P = 0.3
LATE_P = 0.01
SPIKE_P = 0.004
MALFORMED_P = 0.003

SITES = ("berlin", "lyon", "porto", "oslo")
MODELS = ("TX-100", "TX-200", "VX-9")

DEVICES_SCHEMA = pl.Schema(
    {"device": pl.String(), "site": pl.String(), "model": pl.String(), "temp_limit": pl.Float64()}
)
EVENTS_SCHEMA = pl.Schema(
    {
        "seq": pl.Int64(),
        "ts": pl.Int64(),
        "device": pl.String(),
        "temp": pl.Float64(),
        "vibration": pl.Float64(),
        "kind": pl.String(),  # normal, temp_spike, vibration_spike, malformed
        "late": pl.Boolean(),  # produced LATE_DELAY_MS behind
    }
)


@dataclass(frozen=True)
class DemoConfig:
    """What to generate: ``events`` records (malformed ones included) for ``devices``."""

    events: int = 20_000
    devices: int = 50
    seed: int = 7

    @property
    def step_ms(self) -> int:
        return max(1, WINDOW_MS // (self.devices * READINGS_PER_WINDOW))


@dataclass(frozen=True)
class Generated:
    """Records to produce (key, value) in order, and what each one is (:data:`EVENTS_SCHEMA`)."""

    records: list[tuple[bytes, bytes]]
    events: pl.DataFrame


def device_name(i: int) -> str:
    return f"dev-{i:03d}"


def devices(config: DemoConfig) -> pl.DataFrame:
    """The device table: site, model and temperature limit of each device (by ``seed``)."""
    rng = random.Random(f"devices:{config.seed}")
    rows = [
        (device_name(i), rng.choice(SITES), rng.choice(MODELS), float(rng.randint(70, 85)))
        for i in range(config.devices)
    ]
    return pl.DataFrame(rows, schema=DEVICES_SCHEMA, orient="row")


def generate(config: DemoConfig, *, start: int = 0, count: int | None = None) -> Generated:
    """Records ``start .. start+count`` (default: all ``config.events``); chunks of one config
    concatenate to the same records as one call (each record depends on ``seed`` and ``seq``)."""
    base = devices(config)
    bases = [35.0 + 20.0 * ((i * 7919) % 100) / 100.0 for i in range(config.devices)]
    limits = base.get_column("temp_limit").to_list()
    n = config.events - start if count is None else count
    records: list[tuple[bytes, bytes]] = []
    rows: list[tuple[object, ...]] = []
    for seq in range(start, start + n):
        rng = random.Random(config.seed * 1_000_003 + seq)
        d = rng.randrange(config.devices)
        device = device_name(d)
        produced_at = T0 + seq * config.step_ms
        ts = produced_at
        late = False
        roll = rng.random()
        if roll < LATE_P and seq * config.step_ms > LATE_DELAY_MS[1]:
            ts -= rng.randint(*LATE_DELAY_MS)
            late = True
        elif roll < LATE_P + JITTER_P:
            ts -= rng.randint(1, OUT_OF_ORDER_MS - 1)
        temp = round(bases[d] + rng.gauss(0.0, 1.5), 2)
        vibration = round(rng.uniform(0.1, 1.5), 3)
        kind = "normal"
        spike = rng.random()
        if spike < SPIKE_P:
            kind, temp = "temp_spike", round(limits[d] + rng.uniform(5.0, 30.0), 2)
        elif spike < 2 * SPIKE_P:
            kind, vibration = "vibration_spike", round(rng.uniform(6.0, 12.0), 3)
        elif spike < 2 * SPIKE_P + MALFORMED_P:
            kind = "malformed"
        key = device.encode()
        if kind == "malformed":
            bad = [
                b'{"seq": %d, "ts": %d, "device": "%s", "temp": "hot"}',
                b'{"seq": %d, "ts": %d, "device": "%s", "temp": 2',
                b'{"seq": %d, "ts": %d, "device": "%s"}',
            ][seq % 3]
            records.append((key, bad % (seq, ts, key)))
            rows.append((seq, ts, device, None, None, kind, late))
            continue
        value = {"seq": seq, "ts": ts, "device": device, "temp": temp, "vibration": vibration}
        records.append((key, json.dumps(value).encode()))
        rows.append((seq, ts, device, temp, vibration, kind, late))
    return Generated(records, pl.DataFrame(rows, schema=EVENTS_SCHEMA, orient="row"))
