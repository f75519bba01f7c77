"""``run_demo``: the whole scenario — broker, readings, pipeline, live view, outcome, check.

Bounded (the default): every reading is produced first, then the pipeline reads the topic to
its end, every window fires, and the outcome is checked against an independent recomputation
(:mod:`strom.demo.check`). With ``forever=True`` a producer thread keeps generating readings
(chunk after chunk of the same deterministic sequence) and the pipeline streams until Ctrl-C;
windows still open then are not emitted, so the check is skipped.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.live import Live

from strom.demo import pipeline as scenario
from strom.demo.check import Outcome, verify
from strom.demo.generator import DemoConfig, devices, generate
from strom.demo.view import DemoView, summary_table

FOREVER_CHUNK = 1_000
FOREVER_PAUSE_S = 0.5
REFRESH_S = 0.25


@dataclass
class DemoResult:
    """Counts of a run, and every problem the check found (``checked`` False: not run)."""

    produced: int
    malformed: int
    injected_late: int
    outcome: Outcome
    checked: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows(self) -> list[tuple[str, str]]:
        o = self.outcome
        alerted = o.alerts.select("device", "window_start").unique().height
        check = "skipped (--forever)" if not self.checked else "passed" if self.ok else "FAILED"
        return [
            ("events produced", str(self.produced)),
            ("malformed (injected)", str(self.malformed)),
            ("late (injected)", str(self.injected_late)),
            ("windows written", str(o.windows.height)),
            ("alerts", f"{o.alerts.height} ({alerted} windows)"),
            ("late events", str(o.late.height)),
            ("dead letters", str(o.dead_letters)),
            ("check", check),
        ]


def run_demo(
    config: DemoConfig, workdir: Path, console: Console, *, live: bool, forever: bool = False
) -> DemoResult:
    """Run the scenario with a broker in this process; SQLite output goes to ``workdir``."""
    from strom.broker import Broker

    db = workdir / "demo.db"
    db.unlink(missing_ok=True)
    table = devices(config)
    scenario.write_devices(db, table)
    view = DemoView(console, live=live)
    with Broker() as broker:
        bootstrap = broker.bootstrap_servers
        scenario.create_topics(bootstrap)
        console.print(
            f"broker on {bootstrap}; {config.devices} devices; topic "
            f"{scenario.READINGS_TOPIC} ({scenario.PARTITIONS} partitions); SQLite {db}"
        )
        _warm_up_kernels(console)
        if forever:
            events = _stream_forever(config, bootstrap, db, view, console, live)
        else:
            generated = generate(config)
            scenario.produce(bootstrap, generated)
            console.print(f"produced {len(generated.records)} readings; running the pipeline")
            _run_pipeline(bootstrap, db, view, console, live, bounded=True, stop=None)
            events = generated.events
        result = DemoResult(
            produced=events.height,
            malformed=events.filter(pl.col("kind") == "malformed").height,
            injected_late=events.filter(pl.col("late")).height,
            outcome=scenario.outcome(db, bootstrap),
            checked=not forever,
        )
    if not forever:
        result.problems = verify(events, table, result.outcome)
    console.print(summary_table(result.rows()))
    for problem in result.problems:
        console.print(f"[red]mismatch:[/] {problem}")
    return result


def _warm_up_kernels(console: Console) -> None:
    """Load (on the first run after an install: compile) the Kafka source's numba kernels
    before the pipeline starts, saying so, rather than stalling its first poll silently."""
    from strom.connectors.kafka.native_json import warm_up

    started = time.perf_counter()
    with console.status("loading strom's compiled Kafka kernels (the first run compiles them)"):
        warm_up()
    console.print(f"Kafka kernels ready in {time.perf_counter() - started:.1f} s")


def _run_pipeline(
    bootstrap: str,
    db: Path,
    view: DemoView,
    console: Console,
    live: bool,
    *,
    bounded: bool,
    stop: threading.Event | None,
) -> None:
    def keep_going() -> bool:
        return stop is None or not stop.is_set()

    if not live:
        scenario.run(
            bootstrap,
            db,
            bounded=bounded,
            windows_view=view.windows_sink,
            alerts_view=view.alerts_sink,
            tick=keep_going,
        )
        return
    with Live(view.render(), console=console, auto_refresh=False) as display:
        last = [0.0]

        def tick() -> bool:
            now = time.monotonic()
            if now - last[0] >= REFRESH_S:
                last[0] = now
                display.update(view.render(), refresh=True)
            return keep_going()

        try:
            scenario.run(
                bootstrap,
                db,
                bounded=bounded,
                windows_view=view.windows_sink,
                alerts_view=view.alerts_sink,
                tick=tick,
            )
        finally:
            display.update(view.render(), refresh=True)


def _stream_forever(
    config: DemoConfig, bootstrap: str, db: Path, view: DemoView, console: Console, live: bool
) -> pl.DataFrame:
    """Produce chunk after chunk in a thread and stream until Ctrl-C; returns what was sent."""
    stop = threading.Event()
    sent: list[pl.DataFrame] = []

    def producer() -> None:
        start = 0
        while not stop.is_set():
            chunk = generate(config, start=start, count=FOREVER_CHUNK)
            scenario.produce(bootstrap, chunk)
            sent.append(chunk.events)
            start += FOREVER_CHUNK
            stop.wait(FOREVER_PAUSE_S)

    thread = threading.Thread(target=producer, name="strom-demo-producer", daemon=True)
    thread.start()
    console.print("streaming until Ctrl-C")
    try:
        _run_pipeline(bootstrap, db, view, console, live, bounded=False, stop=stop)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop.set()
        thread.join()
    return pl.concat(sent) if sent else generate(config, count=0).events
