"""The latency benchmark's pipeline in Quix Streams (run inside the Quix venv, without strom).

``python quix_child.py --bootstrap H:P --input IN --output OUT --work-dir DIR``: reads JSON
events ``{"seq": n, "sent_us": t}`` from IN as a consumer group of its own (from the earliest
offset), keeps those whose ``seq`` is not a multiple of 10 and writes them to OUT as JSON, with
Quix's defaults otherwise (at-least-once, commits every 5 s). Runs until SIGTERM, which Quix
handles as a graceful stop.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--bootstrap", "--input", "--output"):
        parser.add_argument(name, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()

    from quixstreams import Application

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"latency-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=str(args.work_dir / "quix-state"),
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    events = app.dataframe(app.topic(args.input, value_deserializer="json"))
    events = events.filter(lambda event: event["seq"] % 10 != 0)
    events.to_topic(app.topic(args.output, value_serializer="json"))
    app.run()


if __name__ == "__main__":
    main()
