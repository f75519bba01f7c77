"""The ML benchmark's pipeline in Bytewax (run in the Bytewax venv, without strom).

As Bytewax's docs show it: ``KafkaSource`` (``tail=False`` when bounded, so the dataflow ends
at the topics' end offsets and closes every window), the JSON decoded in ``map``, keyed by
device (``key_on``), a ``TumblingWindower`` of ``fold_window`` on an ``EventClock`` over ``ts``
(no wait), then the model called once per closed window in ``map`` (``predict_proba`` of one
row), and the prediction written with ``KafkaSink``. One worker, in this process. Bounded, the
clock's "now" is held still (a replayed topic's old timestamps would otherwise be late as system
time moves on, as in the Nexmark child); live, it follows system time, so a window closes when
its end passes even before its device's next reading.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from _ml_common import END_PREFIX, WINDOW_MS, Clock, load_model, parse_args

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FROZEN_NOW = datetime(2000, 1, 1, tzinfo=UTC)


def _add(acc: list[float], event: dict[str, Any]) -> list[float]:
    t, v = event["temperature"], event["vibration"]
    if not acc:
        return [1, t, t, v, v]
    return [acc[0] + 1, acc[1] + t, max(acc[2], t), acc[3] + v, max(acc[4], v)]


def _merge(a: list[float], b: list[float]) -> list[float]:
    if not a or not b:
        return a or b
    return [a[0] + b[0], a[1] + b[1], max(a[2], b[2]), a[3] + b[3], max(a[4], b[4])]


def main() -> None:
    args = parse_args()
    clock = Clock()
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    model = load_model(args.model)
    events = [0]

    def decode(message: Any) -> dict[str, Any]:
        events[0] += 1
        value: dict[str, Any] = json.loads(message.value)
        return value

    def score(item: tuple[str, tuple[int, list[float]]]) -> KafkaSinkMessage[bytes, bytes]:
        device, (window_id, acc) = item
        n = acc[0]
        row = [[n, acc[1] / n, acc[2], acc[3] / n, acc[4]]]
        probability = float(model.predict_proba(row)[0, 1])
        prediction = {
            "device": device,
            "window_end": (window_id + 1) * WINDOW_MS,
            "score": probability,
        }
        return KafkaSinkMessage(key=device.encode(), value=json.dumps(prediction).encode())

    if args.bounded:
        event_clock = win.EventClock(
            lambda e: EPOCH + timedelta(milliseconds=e["ts"]),
            wait_for_system_duration=timedelta(0),
            now_getter=lambda: FROZEN_NOW,
            to_system_utc=lambda ts: None,
        )
    else:
        event_clock = win.EventClock(
            lambda e: EPOCH + timedelta(milliseconds=e["ts"]),
            wait_for_system_duration=timedelta(0),
        )
    flow = Dataflow("ml")
    messages = op.input(
        "in", flow, KafkaSource([args.bootstrap], [args.input], tail=not args.bounded)
    )
    readings = op.filter(
        "readings",
        op.map("json", messages, decode),
        lambda e: not e["device"].startswith(END_PREFIX),
    )
    keyed = op.key_on("device", readings, lambda e: e["device"])
    windower = win.TumblingWindower(length=timedelta(milliseconds=WINDOW_MS), align_to=EPOCH)
    features = win.fold_window("features", keyed, event_clock, windower, list, _add, _merge)
    op.output(
        "out", op.map("score", features.down, score), KafkaSink([args.bootstrap], args.output)
    )
    clock.ready()
    run_main(flow)
    if args.bounded:
        clock.write(args.stats, events[0])


if __name__ == "__main__":
    main()
