"""The Nexmark queries in Flink SQL, on PyFlink's local mini-cluster (run in the PyFlink venv).

The sources are the generated NDJSON files read by Flink's filesystem connector (the PyPI
package bundles ``flink-json`` but no Parquet format and no Kafka connector, and nothing can be
downloaded here). Streaming mode with event time ``dateTime`` and a watermark 4 s behind it;
windows are the TUMBLE / HOP table-valued functions. Start-up (interpreter, JVM, table
environment) is timed apart from the query (planning, the job, writing results).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from _common import INPUTS, Clock, parse_args, write_rows, write_stats

COLUMNS = {
    "person": "id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, "
    "state STRING, `dateTime` BIGINT, extra STRING",
    "auction": "id BIGINT, itemName STRING, description STRING, initialBid BIGINT, "
    "reserve BIGINT, `dateTime` BIGINT, expires BIGINT, seller BIGINT, category BIGINT, "
    "extra STRING",
    "bid": "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, "
    "`dateTime` BIGINT, extra STRING",
}

# Windows are whole seconds, so UNIX_TIMESTAMP (seconds, session zone UTC) loses nothing.
_MS = "1000 * UNIX_TIMESTAMP(DATE_FORMAT({}, 'yyyy-MM-dd HH:mm:ss'))"

QUERIES: dict[str, tuple[str, str]] = {
    # query: (output columns DDL, SELECT)
    "q0": (
        COLUMNS["bid"],
        "SELECT auction, bidder, price, channel, url, `dateTime`, extra FROM bid",
    ),
    "q1": (
        "auction BIGINT, bidder BIGINT, price DOUBLE, `dateTime` BIGINT, extra STRING",
        "SELECT auction, bidder, 0.908 * CAST(price AS DOUBLE), `dateTime`, extra FROM bid",
    ),
    "q2": (
        "auction BIGINT, price BIGINT",
        "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    ),
    "q3": (
        "name STRING, city STRING, state STRING, id BIGINT",
        "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P "
        "ON A.seller = P.id WHERE A.category = 10 AND P.state IN ('OR', 'ID', 'CA')",
    ),
    "q4": (
        "category BIGINT, avg_final DOUBLE",
        "SELECT category, AVG(CAST(final AS DOUBLE)) FROM ("
        " SELECT MAX(B.price) AS final, A.category FROM auction AS A, bid AS B"
        " WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires"
        " GROUP BY A.id, A.category"
        ") GROUP BY category",
    ),
    # Flink's own Nexmark q5: counts per hopping window, joined with each window's maximum
    # (window Top-N would keep one auction per window: it allows ROW_NUMBER only, not RANK).
    "q5": (
        "auction BIGINT, num BIGINT, window_start BIGINT, window_end BIGINT",
        "WITH counts AS ("
        " SELECT auction, COUNT(*) AS num, window_start, window_end"
        " FROM TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"
        " GROUP BY auction, window_start, window_end)"
        " SELECT C.auction, C.num, {ws}, {we} FROM counts AS C JOIN ("
        " SELECT MAX(num) AS maxn, window_start, window_end FROM counts"
        " GROUP BY window_start, window_end) AS M"
        " ON C.window_start = M.window_start AND C.window_end = M.window_end"
        " AND C.num >= M.maxn".format(
            ws=_MS.format("C.window_start"), we=_MS.format("C.window_end")
        ),
    ),
    # A window join of the bids with their window's highest price.
    "q7": (
        "auction BIGINT, price BIGINT, bidder BIGINT, `dateTime` BIGINT, extra STRING, "
        "window_end BIGINT",
        "SELECT B.auction, B.price, B.bidder, B.`dateTime`, B.extra, {we} FROM ("
        " SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))) AS B"
        " JOIN ("
        " SELECT MAX(price) AS maxprice, window_start, window_end"
        " FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))"
        " GROUP BY window_start, window_end) AS M"
        " ON B.window_start = M.window_start AND B.window_end = M.window_end"
        " AND B.price = M.maxprice".format(we=_MS.format("B.window_end")),
    ),
    "q8": (
        "id BIGINT, name STRING, window_start BIGINT",
        "SELECT P.id, P.name, {ws} FROM ("
        " SELECT id, name, window_start, window_end"
        " FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(ts), INTERVAL '10' SECOND))"
        " GROUP BY id, name, window_start, window_end) AS P"
        " JOIN ("
        " SELECT seller, window_start, window_end"
        " FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(ts), INTERVAL '10' SECOND))"
        " GROUP BY seller, window_start, window_end) AS A"
        " ON P.id = A.seller AND P.window_start = A.window_start"
        " AND P.window_end = A.window_end".format(ws=_MS.format("P.window_start")),
    ),
}
# Regular joins and GROUP BYs over them update their results (retractions); the filesystem sink
# takes appends only, so these are collected as a changelog and applied.
CHANGELOG = frozenset({"q4", "q5"})


def _source_ddl(kind: str, path: Path) -> str:
    return (
        f"CREATE TEMPORARY TABLE {kind} ({COLUMNS[kind]},"
        " ts AS TO_TIMESTAMP_LTZ(`dateTime`, 3),"
        " WATERMARK FOR ts AS ts - INTERVAL '4' SECOND"
        f") WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')"
    )


def _materialize(rows: Any) -> list[dict[str, Any]]:
    """Applies a changelog (+I, -U, +U, -D rows from ``collect()``) to a bag of rows."""
    from pyflink.common import RowKind

    bag: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = tuple(row)
        kind = row.get_row_kind()
        if kind in (RowKind.INSERT, RowKind.UPDATE_AFTER):
            bag[key] = bag.get(key, 0) + 1
        else:
            bag[key] -= 1
    return [{"values": list(k)} for k, n in bag.items() for _ in range(n)]


def main() -> int:
    args = parse_args()
    clock = Clock()
    if args.query not in QUERIES:
        write_stats(args.stats, {"na_reason": f"unknown query {args.query}"})
        return 0
    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("table.local-time-zone", "UTC")
    conf.set("parallelism.default", "1")
    conf.set("pipeline.name", f"nexmark-{args.query}")
    # as Flink's Nexmark suite runs it: mini-batches fold updates before they retract downstream
    conf.set("table.exec.mini-batch.enabled", "true")
    conf.set("table.exec.mini-batch.allow-latency", "2 s")
    conf.set("table.exec.mini-batch.size", "5000")
    out_columns, select = QUERIES[args.query]
    clock.ready()

    for kind in INPUTS[args.query]:
        env.execute_sql(_source_ddl(kind, args.events_dir / f"{kind}.ndjson"))
    names = [c.split()[0].strip("`") for c in out_columns.split(", ")]
    if args.query in CHANGELOG:
        with env.sql_query(select).execute().collect() as results:
            rows = _materialize(results)
        clock.done(_events(args))
        write_rows(args.output, (dict(zip(names, r["values"], strict=True)) for r in rows))
    else:
        sink_dir = args.work_dir / "flink-out"
        env.execute_sql(
            f"CREATE TEMPORARY TABLE results ({out_columns}) WITH ("
            f"'connector' = 'filesystem', 'path' = '{sink_dir}', 'format' = 'json')"
        )
        env.execute_sql(f"INSERT INTO results {select}").wait()
        clock.done(_events(args))
        _gather(sink_dir, args.output)
    write_stats(args.stats, clock.stats)
    return 0


def _events(args: Any) -> int:
    """Input records: the lines of the NDJSON files the query read (counted after the run)."""
    total = 0
    for kind in INPUTS[args.query]:
        with (args.events_dir / f"{kind}.ndjson").open("rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def _gather(sink_dir: Path, output: Path) -> None:
    """Concatenates the sink's part files, in-progress ones included (no checkpoint commits
    them: the job ends with its bounded input)."""
    with output.open("wb") as out:
        for part in sorted(p for p in sink_dir.rglob("*") if p.is_file()):
            if part.name.endswith(".crc") or part.name.startswith("_"):
                continue
            out.write(part.read_bytes())


if __name__ == "__main__":
    sys.exit(main())
