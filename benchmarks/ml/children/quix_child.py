"""The ML benchmark's pipeline in Quix Streams (run in the Quix venv, without strom).

As Quix's docs show it: event time from a topic timestamp extractor (``ts``), a tumbling window
per message key (the device) with ``.agg(...)`` and ``.final()``, closed when the partition's
highest timestamp passes the window's end (``closing_strategy="partition"``, no grace), then the
model called once per window result in ``.apply`` (``predict_proba`` of one row), and the
prediction sent to the output topic as JSON. Quix has no end of input: a bounded run stops once
every input partition is processed up to its end offset (the generator's end records, one per
partition, close the last windows). Quix's defaults otherwise (at-least-once).
"""

from __future__ import annotations

import uuid
from typing import Any

from _ml_common import FEATURES, WINDOW_MS, Clock, end_offsets, load_model, parse_args


def main() -> None:
    args = parse_args()
    clock = Clock()
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Max, Mean

    model = load_model(args.model)
    pending = end_offsets(args.bootstrap, args.input) if args.bounded else {}
    events = [0]

    def processed(topic: str, partition: int, offset: int) -> None:
        if topic != args.input:
            return
        events[0] += 1
        last = pending.get(partition)
        if last is not None and offset >= last:
            del pending[partition]
            if not pending:
                app.stop()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"ml-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=str(args.work_dir / "quix-state"),
        use_changelog_topics=False,
        on_message_processed=processed,
        loglevel="WARNING",
    )
    readings = app.topic(
        args.input,
        value_deserializer="json",
        timestamp_extractor=lambda value, headers, ts, ts_type: value["ts"],
    )
    sdf = app.dataframe(readings)
    windows = (
        sdf.tumbling_window(duration_ms=WINDOW_MS, grace_ms=0)
        .agg(
            readings=Count(),
            mean_temperature=Mean("temperature"),
            max_temperature=Max("temperature"),
            mean_vibration=Mean("vibration"),
            max_vibration=Max("vibration"),
        )
        .final(closing_strategy="partition")
    )

    def score(window: dict[str, Any], key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
        row = [[float(window[f]) for f in FEATURES]]
        device = key.decode() if isinstance(key, bytes) else str(key)
        probability = float(model.predict_proba(row)[0, 1])
        return {"device": device, "window_end": window["end"], "score": probability}

    predictions = windows.apply(score, metadata=True)
    predictions.to_topic(
        app.topic(args.output, value_serializer="json", key_serializer="str"),
        key=lambda p: p["device"],
    )
    clock.ready()
    if not args.bounded:
        app.run()
        return
    if pending:
        app.run(timeout=600)  # a safety net: the application stops at the end of the input
    clock.write(args.stats, events[0])


if __name__ == "__main__":
    main()
