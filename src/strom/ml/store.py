"""The model store: a directory of named, versioned, immutable models and their aliases.

Layout (``root`` is a path, or a ``file://`` URL: the seam where object stores go later)::

    root/<name>/v<N>/model.skops      the model, in skops' format (no pickle)
    root/<name>/v<N>/golden.parquet   a few input rows and the scores recorded for them
    root/<name>/v<N>/meta.json        features, method, metrics, ranges, sha256 of each file
    root/<name>/aliases.json          {"aliases": {"production": 3, ...}, "history": [...]}

Guarantees:

- A version never changes. It is written into a temporary directory, checked by loading it back
  exactly as a reader will, made read-only, then renamed into place: a reader never sees half a
  version, and two writers never get the same number (the rename of a directory onto an
  existing one fails; the loser takes the next number).
- Every load checks each file's sha256 against ``meta.json``, refuses types skops does not
  trust (see :mod:`strom.ml.skops_model`), checks the model takes the recorded features, and
  scores the golden sample against the recorded scores. Any failure is a :class:`ModelError`
  naming the model, the version and the file.
- An alias moves atomically (a new ``aliases.json`` written beside the old one, flushed, then
  renamed over it) under a lock file, so concurrent promotions never lose one another's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl

from strom._fs import fsync_path
from strom.engine.scoring import FeatureSpec
from strom.ml.metadata import ModelError, ModelVersion
from strom.ml.skops_model import (
    SkopsModel,
    check_golden,
    check_model,
    default_method,
    dump_model,
    finite_scores,
    load_model,
)

__all__ = ["ModelStore"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")
#: Golden rows kept per version: enough to catch a changed model, small enough to score on load.
GOLDEN_ROWS = 32
_FILES = ("model.skops", "golden.parquet")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _root(location: str | os.PathLike[str]) -> Path:
    text = os.fspath(location)
    if "://" in text:
        url = urlparse(text)
        if url.scheme != "file":
            raise ValueError(
                f"model store {text!r}: only local directories (a path or file://) are "
                f"supported, not {url.scheme}://"
            )
        text = url.path
    return Path(text)


class ModelStore:
    """Named, versioned models in a directory (see the module for layout and guarantees).

    ``trusted`` names extra types (``"module.Class"``) the loading program trusts in model
    files beyond scikit-learn's, NumPy's and SciPy's. Loaded models are cached per store object:
    each version is read and verified once per process (a worker).

    >>> import tempfile, polars as pl
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = pl.DataFrame({"amount": [1.0, 2.0, 30.0, 40.0], "n": [1, 1, 9, 8]})
    >>> model = LogisticRegression().fit(X, [0, 0, 1, 1])
    >>> store = ModelStore(tempfile.mkdtemp())
    >>> store.register("fraud", model, sample=X, alias="production").version
    1
    >>> store.resolve("fraud", "production")
    1
    """

    def __init__(
        self, root: str | os.PathLike[str], *, trusted: Sequence[str] = (), create: bool = True
    ) -> None:
        self.root = _root(root)
        self.trusted = tuple(trusted)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise ModelError(f"model store {self.root} does not exist")
        self._cache: dict[tuple[str, int], SkopsModel] = {}

    # -- reading -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every model's name, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[int]:
        """``name``'s version numbers, ascending (every complete version directory)."""
        folder = self._model_dir(name)
        if not folder.is_dir():
            return []
        found = (_VERSION_DIR.fullmatch(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m is not None)

    def info(self, name: str, version: int) -> ModelVersion:
        """The metadata of ``name`` version ``version`` (no file is checked: see :meth:`load`)."""
        path = self._version_dir(name, version) / "meta.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(self._missing(name, version)) from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"model {name!r} v{version}: {path} is unreadable ({exc})") from exc
        meta = ModelVersion.from_json(data, str(path))
        if (meta.name, meta.version) != (name, version):
            raise ModelError(
                f"{path} describes {meta.name!r} v{meta.version}, not {name!r} v{version}"
            )
        return meta

    def aliases(self, name: str) -> dict[str, int]:
        """``name``'s aliases (``{"production": 3}``), as they are now."""
        return dict(self._read_aliases(name)["aliases"])

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every promotion of ``name``, oldest first: ``{"alias", "version", "time_ms"}``."""
        return list(self._read_aliases(name)["history"])

    def resolve(self, name: str, ref: str | int) -> int:
        """The version ``ref`` names: a number (``3``, ``"3"``, ``"v3"``), ``"latest"``, or an
        alias (read afresh). :class:`ModelError` if there is none."""
        versions = self.versions(name)
        if not versions:
            known = self.names()
            raise ModelError(f"no model named {name!r} in {self.root} (models: {known or 'none'})")
        text = str(ref)
        number = text[1:] if text.startswith("v") else text
        if number.isdigit():
            version = int(number)
            if version not in versions:
                raise ModelError(self._missing(name, version))
            return version
        if text == "latest":
            return versions[-1]
        aliases = self.aliases(name)
        if text not in aliases:
            raise ModelError(
                f"model {name!r} has no alias {text!r} (aliases: {aliases or 'none'}; promote a "
                f"version first: strom models promote {name} VERSION --alias {text})"
            )
        return aliases[text]

    def changed(self, name: str) -> object:
        """A token that changes with ``name``'s ``aliases.json`` (each promotion renames a new
        file over it, so its inode changes): one ``stat`` per call."""
        try:
            st = (self._model_dir(name) / "aliases.json").stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self, name: str, version: int) -> SkopsModel:
        """``name`` version ``version``, verified (hashes, trusted types, features, golden
        sample) on first use in this store object, then cached."""
        key = (name, version)
        if key not in self._cache:
            self._cache[key] = self._load(name, version)
        return self._cache[key]

    def get(self, name: str, ref: str | int = "production") -> SkopsModel:
        """:meth:`load` of the version ``ref`` names now."""
        return self.load(name, self.resolve(name, ref))

    def _load(self, name: str, version: int) -> SkopsModel:
        meta = self.info(name, version)
        folder = self._version_dir(name, version)
        what = f"model {name!r} v{version}"
        for file in _FILES:
            path = folder / file
            expected = meta.files.get(file)
            if not path.is_file() or expected is None:
                raise ModelError(f"{what}: {path} is missing")
            found = _sha256(path)
            if found != expected:
                raise ModelError(
                    f"{what}: {path} has sha256 {found}, but {expected} was recorded when it was "
                    "registered: the file is corrupt or was changed"
                )
        model = load_model(folder / "model.skops", self.trusted, what)
        check_model(model, meta.method, meta.features, what)
        loaded = SkopsModel(name, version, model, meta.method, meta.features, meta.feature_version)
        try:
            golden = pl.read_parquet(folder / "golden.parquet")
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ModelError(f"{what}: {folder / 'golden.parquet'} is unreadable ({exc})") from exc
        check_golden(loaded, golden, what)
        loaded.calls = 0
        return loaded

    # -- writing -----------------------------------------------------------------------------

    def register(
        self,
        name: str,
        model: object,
        *,
        sample: pl.DataFrame,
        features: Sequence[str] | None = None,
        method: str | None = None,
        metrics: Mapping[str, float] | None = None,
        training_range: tuple[object, object] | None = None,
        code_version: str | None = None,
        feature_version: str | None = None,
        description: str = "",
        alias: str | None = None,
    ) -> ModelVersion:
        """Store ``model`` as ``name``'s next version and return its metadata.

        ``sample``: rows of training data; its first :data:`GOLDEN_ROWS` rows of ``features``
        (default: all of its columns, in order) become the golden sample, and their types the
        recorded feature types. ``method`` (default: ``predict_proba`` if the model has it, then
        ``decision_function``, then ``predict``) is what a score is. ``alias`` promotes the new
        version at once (e.g. ``"staging"``). The model is checked by loading it back as a reader
        will (trusted types included) before the version becomes visible.
        """
        if not _NAME.fullmatch(name):
            raise ModelError(f"model name {name!r} must match {_NAME.pattern}")
        names = list(sample.columns if features is None else features)
        missing = [c for c in names if c not in sample.columns]
        if missing or not names:
            raise ModelError(
                f"model {name!r}: features {missing or names} are not columns of the sample "
                f"{sample.columns}"
            )
        specs = tuple(FeatureSpec(c, str(sample.schema[c])) for c in names)
        method = method or default_method(model)
        check_model(model, method, specs, f"model {name!r}")
        golden = sample.select(names).head(GOLDEN_ROWS)
        if golden.height == 0:
            raise ModelError(
                f"model {name!r}: the sample has no rows (the golden sample needs some)"
            )
        scorer = SkopsModel(name, 0, model, method, specs, feature_version)
        try:
            expected = scorer.score(golden)
        except Exception as exc:
            raise ModelError(f"model {name!r}: scoring the sample raised {exc!r}") from exc
        finite_scores(expected, f"model {name!r}")
        folder = self._model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        try:
            dump_model(model, tmp / "model.skops")
            golden.with_columns(pl.Series("expected_score", expected)).write_parquet(
                tmp / "golden.parquet"
            )
            meta = ModelVersion(
                name=name,
                version=0,
                created_ms=int(time.time() * 1000),
                features=specs,
                method=method,
                files={f: _sha256(tmp / f) for f in _FILES},
                golden_rows=golden.height,
                metrics={str(k): float(v) for k, v in (metrics or {}).items()},
                training_range=None
                if training_range is None
                else (str(training_range[0]), str(training_range[1])),
                code_version=code_version,
                feature_version=feature_version,
                description=description,
                model_type=f"{type(model).__module__}.{type(model).__qualname__}",
                libraries=_libraries(),
            )
            meta = self._publish(name, tmp, meta)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if alias is not None:
            self.promote(name, meta.version, alias)
        return meta

    def _publish(self, name: str, tmp: Path, meta: ModelVersion) -> ModelVersion:
        """Number the version, check it loads, make it read-only and rename it into place."""
        while True:
            version = (self.versions(name) or [0])[-1] + 1
            numbered = ModelVersion(**{**meta.__dict__, "version": version})
            (tmp / "meta.json").write_text(numbered.dumps(), encoding="utf-8")
            target = self._version_dir(name, version)
            self._check_loadable(tmp, numbered)
            for file in (*_FILES, "meta.json"):
                os.chmod(tmp / file, 0o444)
            try:
                os.rename(tmp, target)
            except OSError:
                if target.exists():  # another writer took this number: take the next one
                    for file in (*_FILES, "meta.json"):
                        os.chmod(tmp / file, 0o644)
                    continue
                raise
            fsync_path(target.parent)
            return numbered

    def _check_loadable(self, folder: Path, meta: ModelVersion) -> None:
        what = f"model {meta.name!r}"
        model = load_model(folder / "model.skops", self.trusted, what)
        check_model(model, meta.method, meta.features, what)
        loaded = SkopsModel(meta.name, 0, model, meta.method, meta.features, None)
        check_golden(loaded, pl.read_parquet(folder / "golden.parquet"), what)

    def promote(self, name: str, version: int | str, alias: str = "production") -> int:
        """Point ``alias`` at ``version`` (which must load: a corrupt version is refused), in
        one atomic rename; returns the version number. Running pipelines switch to it between
        batches, or at their next checkpoint."""
        if not _ALIAS.fullmatch(alias) or alias == "latest":
            raise ModelError(f"alias {alias!r} must match {_ALIAS.pattern} and not be 'latest'")
        number = self.resolve(name, version)
        self._load(name, number)  # verify it, whatever this process has cached
        with self._lock(name):
            current = self._read_aliases(name)
            current["aliases"][alias] = number
            current["history"].append(
                {"alias": alias, "version": number, "time_ms": int(time.time() * 1000)}
            )
            self._write_aliases(name, current)
        return number

    # -- files -------------------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ModelError(f"model name {name!r} must match {_NAME.pattern}")
        return self.root / name

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / f"v{version}"

    def _missing(self, name: str, version: int) -> str:
        return (
            f"model {name!r} has no version {version} (versions: {self.versions(name) or 'none'})"
        )

    def _read_aliases(self, name: str) -> dict[str, Any]:
        path = self._model_dir(name) / "aliases.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"aliases": {}, "history": []}
        except (OSError, ValueError) as exc:
            raise ModelError(f"model {name!r}: {path} is unreadable ({exc})") from exc
        aliases = data.get("aliases") if isinstance(data, dict) else None
        if not isinstance(aliases, dict) or not all(isinstance(v, int) for v in aliases.values()):
            raise ModelError(f"model {name!r}: {path} is not an aliases file")
        return {"aliases": aliases, "history": list(data.get("history", []))}

    def _write_aliases(self, name: str, content: Mapping[str, Any]) -> None:
        folder = self._model_dir(name)
        fd, tmp = tempfile.mkstemp(prefix=".aliases-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(content, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / "aliases.json")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_path(folder)

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        with (self._model_dir(name) / ".lock").open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"


def _libraries() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for package in ("scikit-learn", "skops", "numpy", "strom"):
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out
