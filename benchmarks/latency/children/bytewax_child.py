"""The latency benchmark's pipeline in Bytewax (run inside the Bytewax venv, without strom).

``python bytewax_child.py --bootstrap H:P --input IN --output OUT --work-dir DIR``: one worker
in this process reads IN from the beginning (``KafkaSource``, tailing), keeps the events whose
``seq`` is not a multiple of 10 and writes their values unchanged to OUT (``KafkaSink``), with
Bytewax's defaults otherwise (no recovery configured). Runs until it is killed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--bootstrap", "--input", "--output"):
        parser.add_argument(name, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()

    import bytewax.operators as op
    from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    flow = Dataflow("latency")
    messages = op.input("in", flow, KafkaSource([args.bootstrap], [args.input]))
    kept = op.filter("keep", messages, lambda m: json.loads(m.value)["seq"] % 10 != 0)
    out = op.map("out", kept, lambda m: KafkaSinkMessage(key=None, value=m.value))
    op.output("sink", out, KafkaSink([args.bootstrap], args.output))
    run_main(flow)


if __name__ == "__main__":
    main()
