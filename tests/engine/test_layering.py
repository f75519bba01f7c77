"""Layers point one way: the bounded runner and the engine's shared semantics never load the
streaming runtime, even while running every kind of plan node."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# ``strom/__init__.py`` is the public face, which re-exports both executors by design; the rule
# is about the packages' own imports, so the child loads ``strom`` as a bare namespace.
_CHILD = textwrap.dedent(
    """
    import importlib.util, json, pkgutil, sys, types

    spec = importlib.util.find_spec("strom")
    root = types.ModuleType("strom")
    root.__path__ = list(spec.submodule_search_locations)
    sys.modules["strom"] = root

    import polars as pl
    import strom.engine
    for info in pkgutil.iter_modules(strom.engine.__path__, "strom.engine."):
        importlib.import_module(info.name)

    from strom.bounded import run_bounded
    from strom.connectors.memory import MemorySink, MemorySource
    from strom.pipeline import Pipeline, ProcessFunction, Session, Tumbling, agg


    class Table:
        key = "k"

        def schema(self):
            return pl.Schema({"k": pl.String(), "site": pl.String()})

        def lookup(self, keys):
            return pl.DataFrame({"k": ["a"], "site": ["x"]}).filter(pl.col("k").is_in(keys))


    class Echo(ProcessFunction):
        def process_element(self, row, ctx):
            ctx.emit({"k": row["k"]})


    rows = [{"ts": t, "k": "ab"[t % 2], "v": t} for t in range(0, 40_000, 700)]
    p = Pipeline()
    s = p.source(MemorySource([[rows[:20], rows[20:]]]), timestamp="ts")
    s = s.filter(pl.col("v") >= 0).with_columns(w=pl.col("v") * 2).select("ts", "k", "v")
    s = s.map_batches(lambda b: b).lookup_join(Table(), on="k", columns=["site"])
    columns = {"ts": pl.Int64, "k": pl.String, "v": pl.Int64, "site": pl.String}
    s = s.union(s.map(lambda r: r, output_schema=columns))
    functions = ["count", "sum", "mean", "min", "max", "first", "last", "var", "std"]
    functions += ["count_distinct", "approx_count_distinct"]
    windows = s.key_by("k").window(Tumbling(10_000)).agg(
        *(getattr(agg, f)("v") for f in functions), agg.approx_quantile("v", 0.5)
    )
    windows.sink(MemorySink())
    windows.late().sink(MemorySink())
    s.key_by("k").window(Session(1_000)).agg(agg.count()).sink(MemorySink())
    s.key_by("k").process(Echo(), output_schema={"k": pl.String}).sink(MemorySink())
    joined = s.interval_join(s, on="k", lower_ms=0, upper_ms=100)
    joined.sink(MemorySink())
    joined.late_left().sink(MemorySink())
    s.key_by("k").agg(agg.count(), agg.first("v")).sink(MemorySink())
    equi = s.join(s.select("k", "site"), on="k", how="left", ttl_ms=1_000)
    equi.sort("v").top_k(3, by="v").distinct("k").sink(MemorySink())
    run_bounded(p)
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("strom."))))
    """
)


def test_bounded_runner_and_engine_do_not_import_the_streaming_runtime() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip()
    assert '"strom.bounded.runner"' in loaded and '"strom.engine.aggregations"' in loaded
    assert "strom.runtime" not in loaded, loaded


_FIRST = textwrap.dedent(
    """
    import importlib, importlib.util, sys, types

    spec = importlib.util.find_spec("strom")
    root = types.ModuleType("strom")
    root.__path__ = list(spec.submodule_search_locations)
    sys.modules["strom"] = root
    importlib.import_module(sys.argv[1])
    """
)


def _modules(package: str) -> list[str]:
    import importlib
    import pkgutil

    path = importlib.import_module(package).__path__
    return [info.name for info in pkgutil.iter_modules(path, package + ".")]


@pytest.mark.parametrize("module", _modules("strom.engine") + _modules("strom.pipeline"))
def test_each_engine_and_pipeline_module_imports_first(module: str) -> None:
    """No import cycle between the plan and the engine's semantics: whichever module a process
    imports first (with no ``strom/__init__`` to order them), it loads."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST, module], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
