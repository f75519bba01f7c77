"""The demo's terminal view: a live table of recent windows and alerts (rich ``Live`` on a
terminal; one plain line per alert otherwise), and the final summary."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl
from rich.console import Console, Group, RenderableType
from rich.table import Table

from strom.engine.contracts import AtLeastOnceSink

RECENT = 12


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


class CallbackSink(AtLeastOnceSink):
    """A sink that hands each batch to ``on_batch`` (the view's input); at-least-once."""

    def __init__(self, on_batch: Callable[[pl.DataFrame], None]) -> None:
        self.on_batch = on_batch

    def write(self, batch: pl.DataFrame) -> None:
        self.on_batch(batch)


class DemoView:
    """Counts window results and alerts as they stream by and keeps the most recent ones."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        self.live = live
        self.window_rows = 0
        self.alert_rows = 0
        self.windows: deque[dict[str, object]] = deque(maxlen=RECENT)
        self.alerts: deque[dict[str, object]] = deque(maxlen=RECENT)
        self.windows_sink = CallbackSink(self._on_windows)
        self.alerts_sink = CallbackSink(self._on_alerts)

    def _on_windows(self, batch: pl.DataFrame) -> None:
        self.window_rows += batch.height
        self.windows.extend(batch.tail(RECENT).iter_rows(named=True))

    def _on_alerts(self, batch: pl.DataFrame) -> None:
        self.alert_rows += batch.height
        rows = list(batch.iter_rows(named=True))
        self.alerts.extend(rows[-RECENT:])
        if not self.live:
            for r in rows:
                self.console.print(
                    f"ALERT {r['device']} {_clock(int(r['window_start']))} {r['site']}: "
                    f"{r['reason']} (max temp {r['max_temp']} / limit {r['temp_limit']}, "
                    f"max vibration {r['max_vibration']})"
                )

    def render(self) -> RenderableType:
        windows = Table(title=f"recent windows ({self.window_rows} results)", title_justify="left")
        for column in ("device", "window", "site", "count", "mean temp", "max temp", "max vib"):
            windows.add_column(column, justify="left" if column in ("device", "site") else "right")
        for w in self.windows:
            windows.add_row(
                str(w["device"]),
                _clock(int(w["window_start"])),  # type: ignore[call-overload]
                str(w["site"]),
                str(w["count"]),
                f"{w['mean_temp']:.2f}",
                f"{w['max_temp']:.2f}",
                f"{w['max_vibration']:.3f}",
            )
        alerts = Table(title=f"alerts ({self.alert_rows})", title_justify="left")
        for column in ("device", "window", "site", "reason"):
            alerts.add_column(column)
        for a in self.alerts:
            alerts.add_row(
                str(a["device"]),
                _clock(int(a["window_start"])),  # type: ignore[call-overload]
                str(a["site"]),
                f"[red]{a['reason']}[/]",
            )
        return Group(windows, alerts)


def summary_table(rows: list[tuple[str, str]]) -> Table:
    table = Table(show_header=False, show_edge=False, title="summary", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table
