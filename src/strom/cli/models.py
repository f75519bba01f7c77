"""``strom models``: list a model store's models, show a version, promote one to an alias.

The store is ``--store DIR`` (or ``$STROM_MODEL_STORE``, default ``./strom-models``). Listing
and showing read metadata only; ``show`` verifies the version's files too (``--verify``), and
``promote`` always does: a version that does not load is never promoted.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from strom.cli.output import console, table
from strom.ml import ModelError, ModelStore

__all__ = ["models"]

_STORE = click.option(
    "--store",
    "store_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="strom-models",
    show_default=True,
    envvar="STROM_MODEL_STORE",
    help="The model store's directory ($STROM_MODEL_STORE).",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _open(store_dir: Path, trusted: tuple[str, ...] = ()) -> ModelStore:
    try:
        return ModelStore(store_dir, trusted=trusted, create=False)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def models() -> None:
    """List, show and promote the versions of a model store."""


@models.command("list")
@_STORE
@_JSON
def list_(store_dir: Path, as_json: bool) -> None:
    """Every model: its versions, aliases and latest version's metrics."""
    store = _open(store_dir)
    try:
        found = [(n, store.versions(n), store.aliases(n)) for n in store.names()]
        latest = {n: store.info(n, vs[-1]) for n, vs, _ in found if vs}
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        out = [{"name": n, "versions": vs, "aliases": a} for n, vs, a in found]
        click.echo(json.dumps(out, indent=1))
        return
    if not found:
        console().print(f"no models in {store_dir}")
        return
    rows = table("Model", "Versions", "Aliases", "Latest", "Created (UTC)", "Metrics")
    for name, versions, aliases in found:
        meta = latest.get(name)
        rows.add_row(
            name,
            ", ".join(map(str, versions)),
            ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "-",
            f"v{meta.version}" if meta else "-",
            _time(meta.created_ms) if meta else "-",
            _metrics(meta.metrics) if meta else "-",
        )
    console().print(rows)


@models.command()
@click.argument("name")
@click.argument("version", required=False, default="latest", metavar="[VERSION|ALIAS]")
@_STORE
@_JSON
@click.option("--verify", is_flag=True, help="Also check hashes, trusted types and golden sample.")
@click.option("--trust", multiple=True, metavar="TYPE", help="Extra type to trust (--verify).")
def show(
    name: str, version: str, store_dir: Path, as_json: bool, verify: bool, trust: tuple[str, ...]
) -> None:
    """Show a version's metadata (default: the latest)."""
    store = _open(store_dir, trust)
    try:
        number = store.resolve(name, version)
        meta = store.info(name, number)
        if verify:
            store.load(name, number)
        aliases = sorted(a for a, v in store.aliases(name).items() if v == number)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({**meta.to_json(), "aliases": aliases}, indent=1))
        return
    out = console()
    out.print(f"model {name} v{number}" + (f" ({', '.join(aliases)})" if aliases else ""))
    out.print(f"  type:             {meta.model_type} (score: {meta.method})")
    out.print(f"  created:          {_time(meta.created_ms)} UTC")
    features = ", ".join(f"{f.name}: {f.dtype}" for f in meta.features)
    out.print(f"  features:         {features}")
    out.print(f"  feature version:  {meta.feature_version or '-'}")
    span = meta.training_range
    out.print(f"  training data:    {f'{span[0]} .. {span[1]}' if span else '-'}")
    out.print(f"  metrics:          {_metrics(meta.metrics)}")
    out.print(f"  code version:     {meta.code_version or '-'}")
    out.print(f"  golden sample:    {meta.golden_rows} rows")
    for file, digest in sorted(meta.files.items()):
        out.print(f"  sha256 {file}: {digest}")
    out.print("  libraries:        " + ", ".join(f"{k} {v}" for k, v in meta.libraries.items()))
    if verify:
        out.print("  verified:         hashes, trusted types, features, golden sample")


@models.command()
@click.argument("name")
@click.argument("version", metavar="VERSION")
@click.option("--alias", default="production", show_default=True, help="The alias to move.")
@click.option("--trust", multiple=True, metavar="TYPE", help="Extra type to trust in the file.")
@_STORE
def promote(name: str, version: str, alias: str, trust: tuple[str, ...], store_dir: Path) -> None:
    """Point ALIAS at VERSION (verified first); running pipelines switch to it."""
    store = _open(store_dir, trust)
    try:
        before = store.aliases(name).get(alias)
        number = store.promote(name, version, alias)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    was = f" (was v{before})" if before is not None else ""
    click.echo(f"{name}: {alias} -> v{number}{was}")


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _metrics(metrics: dict[str, float] | object) -> str:
    if not isinstance(metrics, dict) or not metrics:
        return "-"
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
