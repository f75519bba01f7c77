"""The TPC-H run as Markdown (one table per query, then strom against its peers) and a PNG."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from benchmarks.report import machine_summary

__all__ = ["summary", "write"]

RESULTS = Path(__file__).resolve().parent.parent / "results"
PEERS = ("polars", "duckdb", "pyspark")


def _ok(rows: list[dict[str, Any]], query: str, system: str) -> dict[str, Any] | None:
    for row in rows:
        if row["query"] == query and row["system"] == system and row.get("correct"):
            return row
    return None


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per query: strom's best correct system against the fastest correct peer and PySpark
    (wall-time ratios, > 1 means strom is slower) and its peak memory against the lowest peer's."""
    out = []
    for query in dict.fromkeys(r["query"] for r in rows):
        stroms = [r for s in ("strom local", "strom bounded") if (r := _ok(rows, query, s))]
        peers = [r for s in PEERS if (r := _ok(rows, query, s))]
        if not stroms or not peers:
            continue
        best = min(stroms, key=lambda r: r["wall_s"])
        fastest = min(peers, key=lambda r: r["wall_s"])
        spark = _ok(rows, query, "pyspark")
        line = {
            "query": query,
            "strom": best["system"],
            "vs_fastest": best["wall_s"] / fastest["wall_s"],
            "fastest": fastest["system"],
            "pyspark_over_strom": spark["wall_s"] / best["wall_s"] if spark else None,
            "memory_vs_lowest": best["peak_mib"] / min(p["peak_mib"] for p in peers),
        }
        on_spark = _ok(rows, query, "strom spark")
        if on_spark and spark:
            line["strom_spark_vs_pyspark"] = on_spark["wall_s"] / spark["wall_s"]
        out.append(line)
    return out


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    scale = rows[0]["params"]["scale"] if rows else 0
    out = [
        f"# Batch: TPC-H scale factor {scale:g}",
        "",
        f"Taken {stamp} on {machine_summary()}. `lineitem` and `orders` as 2,000 Parquet files "
        "each (`tpchgen-cli`), the other tables one file each. One process per query and "
        "system; wall time after imports (Spark: after the session started, given apart); CPU "
        "and peak anonymous memory of the process tree; rows/s: lineitem rows over wall time; "
        "`correct`: the answer equals DuckDB's.",
        "",
        "| query | system | wall s | session s | CPU s | peak MiB | M rows/s | correct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['query']} | {r['system']} |"
        if "unsupported" in r or "failed" in r:
            reason = r.get("unsupported") or r.get("failed")
            out.append(f"{head} {str(reason).split(';')[0]} | | | | | |")
            continue
        out.append(
            f"{head} {_f(r['wall_s'])} | {_f(r.get('session_s'))} | {_f(r['cpu_s'], 1)} | "
            f"{r['peak_mib']:,.0f} | {r['rows_per_s'] / 1e6:,.1f} | {r['correct']} |"
        )
    out += [
        "",
        "strom's faster correct system against the peers (wall-time ratios; targets: within "
        "1.3x of the fastest, 5x faster than PySpark, memory within 2x of the lowest, strom on "
        "Spark within 1.3x of PySpark):",
        "",
        "| query | strom | strom / fastest | fastest | PySpark / strom | memory / lowest "
        "| strom on Spark / PySpark |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary(rows):
        out.append(
            f"| {s['query']} | {s['strom']} | {_f(s['vs_fastest'])} | {s['fastest']} | "
            f"{_f(s['pyspark_over_strom'], 1)} | {_f(s['memory_vs_lowest'])} | "
            f"{_f(s.get('strom_spark_vs_pyspark'))} |"
        )
    return "\n".join(out) + "\n"


def chart(rows: list[dict[str, Any]], path: Path) -> bool:
    """Wall time per query and system (log scale); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [r for r in rows if r.get("correct")]
    queries = list(dict.fromkeys(r["query"] for r in done))
    systems = list(dict.fromkeys(r["system"] for r in done))
    if not queries:
        return False
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(queries)), 4))
    for i, system in enumerate(systems):
        wall = {r["query"]: r["wall_s"] for r in done if r["system"] == system}
        xs = [q + i * width for q in range(len(queries))]
        ax.bar(xs, [wall.get(q, 0) for q in queries], width, label=system)
    ax.set_xticks([q + 0.4 - width / 2 for q in range(len(queries))], queries)
    ax.set_yscale("log")
    ax.set_ylabel("wall seconds (lower is better)")
    ax.set_title(f"TPC-H scale factor {rows[0]['params']['scale']:g}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(rows: list[dict[str, Any]], *, quick: bool, directory: Path = RESULTS) -> list[Path]:
    """``batch-tpch[-quick].md`` and its chart in ``directory``; the paths written."""
    name = "batch-tpch-quick" if quick else "batch-tpch"
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    png = directory / f"{name}.png"
    text = markdown(rows)
    if chart(rows, png):
        text += f"\n![wall time per query]({png.name})\n"
        written.append(png)
    md = directory / f"{name}.md"
    md.write_text(text, encoding="utf-8")
    return [md, *written]
