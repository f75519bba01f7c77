"""scikit-learn models in skops' format: written without pickle, read without running code.

skops stores an object as a zip of JSON (which class, which constructor state) and NumPy
arrays, and :func:`load` refuses any type not on a trust list before building anything. What
this module trusts:

- skops' own default trusted types: scikit-learn's estimators and transformers, NumPy and SciPy
  arrays and dtypes, Python's builtin containers and scalars;
- :data:`DEFAULT_TRUSTED`: ``sklearn.tree._tree.Tree``, the array-backed node table inside every
  tree and tree ensemble (skops rebuilds it from its arrays; no code from the file runs);
- whatever the :class:`~strom.ml.ModelStore` is given as ``trusted=`` by the program loading it.

Never the file's own say: a type a file names that is on none of these lists fails the load
with its name. scikit-learn and skops are imported only here, and only when a model is
written or read (``pip install 'strom[ml]'``).
"""

from __future__ import annotations

import importlib
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl

from strom.engine.scoring import FeatureSpec
from strom.ml.metadata import ModelError

__all__ = ["DEFAULT_TRUSTED", "METHODS", "SkopsModel", "dump_model", "load_model", "score_with"]

DEFAULT_TRUSTED = ("sklearn.tree._tree.Tree",)

#: How a score is computed, in the order a model's default is picked.
METHODS = ("predict_proba", "decision_function", "predict")


def _skops() -> ModuleType:
    try:
        return importlib.import_module("skops.io")
    except ImportError:
        raise ImportError(
            "strom's model store needs skops and scikit-learn: pip install 'strom[ml]'"
        ) from None


def default_method(model: object) -> str:
    for method in METHODS:
        if callable(getattr(model, method, None)):
            return method
    raise ModelError(f"{type(model).__name__} is not a model: it has none of {', '.join(METHODS)}")


def score_with(model: Any, method: str, features: pl.DataFrame) -> np.ndarray:
    """One model call over ``features``: a 1-D float array, one score per row.

    ``predict_proba`` of a binary classifier gives the second class's probability (scikit-learn
    orders ``classes_``, so that is the positive class of 0/1 or False/True labels).
    """
    # a frame when the model was fitted on one (it then checks the column names), else arrays
    data: Any = features if hasattr(model, "feature_names_in_") else features.to_numpy()
    raw = np.asarray(getattr(model, method)(data))
    if method == "predict_proba":
        if raw.ndim != 2 or raw.shape[1] != 2:
            raise ValueError(
                f"predict_proba returned shape {raw.shape}; a score needs a binary classifier "
                "(or register it with method='predict')"
            )
        raw = raw[:, 1]
    if raw.ndim != 1:
        raise ValueError(f"{method} returned shape {raw.shape}, not one value per row")
    return raw.astype(np.float64)


def check_model(model: object, method: str, features: Sequence[FeatureSpec], what: str) -> None:
    """``model`` is a fitted model offering ``method`` over exactly ``features``."""
    if not callable(getattr(model, method, None)):
        raise ModelError(f"{what} is a {type(model).__name__}, which has no {method}()")
    names = [f.name for f in features]
    fitted = getattr(model, "feature_names_in_", None)
    if fitted is not None and list(fitted) != names:
        raise ModelError(
            f"{what} was fitted on features {list(fitted)}, but its metadata says {names}"
        )
    count = getattr(model, "n_features_in_", None)
    if count is not None and int(count) != len(names):
        raise ModelError(f"{what} was fitted on {count} features, but its metadata names {names}")


def dump_model(model: object, path: Path) -> None:
    _skops().dump(model, path)


def load_model(path: Path, trusted: Sequence[str], what: str) -> Any:
    """The object in skops file ``path``, if every type it names is trusted (see the module)."""
    sio = _skops()
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ModelError(f"{what}: {path} is not a skops model file ({exc})") from exc
    allowed = {*DEFAULT_TRUSTED, *trusted}
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise ModelError(
            f"{what}: {path} holds types that are not trusted: {refused}. Only scikit-learn, "
            "NumPy and SciPy types are trusted by default; if you trust this file's source, "
            f"pass ModelStore(..., trusted={refused!r})"
        )
    try:
        return sio.load(path, trusted=sorted(set(untrusted)))
    except Exception as exc:  # skops raises many kinds on a damaged file; all mean one thing
        raise ModelError(f"{what}: {path} cannot be read ({type(exc).__name__}: {exc})") from exc


class SkopsModel:
    """A verified model version: a :class:`~strom.engine.scoring.ScoringModel`."""

    def __init__(
        self,
        name: str,
        version: int,
        model: Any,
        method: str,
        features: Sequence[FeatureSpec],
        feature_version: str | None,
    ) -> None:
        self._name = name
        self._version = version
        self.model = model
        self.method = method
        self._features = tuple(features)
        self._feature_version = feature_version
        #: how many times :meth:`score` ran (one call per batch: tests count them)
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int:
        return self._version

    @property
    def features(self) -> tuple[FeatureSpec, ...]:
        return self._features

    @property
    def feature_version(self) -> str | None:
        return self._feature_version

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self._features]

    def score(self, features: pl.DataFrame) -> np.ndarray:
        self.calls += 1
        numeric = features.with_columns(
            pl.col(f.name).cast(pl.Float64)
            for f in self._features
            if f.dtype.startswith(("Int", "UInt", "Float", "Decimal"))
        )
        return score_with(self.model, self.method, numeric)

    def __repr__(self) -> str:
        return f"SkopsModel({self._name!r}, v{self._version}, {type(self.model).__name__})"


def check_golden(model: SkopsModel, golden: pl.DataFrame, what: str) -> None:
    """The model's scores of the golden inputs equal the scores recorded at registration (to
    a relative 1e-7: the same library versions give identical scores; other BLAS builds may
    differ in the last bits)."""
    expected = golden.get_column("expected_score").to_numpy()
    try:
        got = model.score(golden.select(model.feature_names))
    except Exception as exc:
        raise ModelError(f"{what}: scoring the golden sample raised {exc!r}") from exc
    close = np.isclose(got, expected, rtol=1e-7, atol=1e-12)
    if not bool(close.all()):
        row = int(np.flatnonzero(~close)[0])
        raise ModelError(
            f"{what}: the golden sample's row {row} scores {got[row]!r}, but {expected[row]!r} "
            f"was recorded at registration ({int((~close).sum())} of {len(close)} rows differ): "
            "the model file or the libraries changed"
        )


def finite_scores(scores: np.ndarray, what: str) -> None:
    bad = [float(s) for s in scores if not math.isfinite(float(s))]
    if bad:
        raise ModelError(f"{what}: the sample's scores include non-finite values {bad[:3]}")
