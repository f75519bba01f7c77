"""A model version's metadata (``meta.json``): what it expects, where it came from, its files.

Written once, when the version is registered, and never changed (the version directory is
read-only from then on); aliases live beside the versions, in the model's ``aliases.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from strom.engine.scoring import FeatureSpec

__all__ = ["FORMAT", "ModelError", "ModelVersion"]

#: The layout of a version directory (``meta.json``'s ``format``); a reader refuses others.
FORMAT = "strom-model/1"


class ModelError(ValueError):
    """A model that cannot be registered, found, trusted or loaded; the message names the model,
    the version and the file."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model (immutable).

    ``features``: the input columns in the model's order, with the Polars types of the training
    data. ``method``: what a score is (``predict_proba``: the positive class's probability;
    ``decision_function``; ``predict``). ``files``: each file's sha256, checked on every load.
    ``golden_rows``: how many rows of the golden sample (inputs and expected scores) the load
    check recomputes. ``training_range``: the first and last event time of the training data,
    as given. ``feature_version``: the feature definition the training data came from.
    ``libraries``: the versions of the libraries that wrote the file.
    """

    name: str
    version: int
    created_ms: int
    features: tuple[FeatureSpec, ...]
    method: str
    files: Mapping[str, str]
    golden_rows: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    training_range: tuple[str, str] | None = None
    code_version: str | None = None
    feature_version: str | None = None
    description: str = ""
    model_type: str = ""
    libraries: Mapping[str, str] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "created_ms": self.created_ms,
            "features": [{"name": f.name, "dtype": f.dtype} for f in self.features],
            "method": self.method,
            "files": dict(self.files),
            "golden_rows": self.golden_rows,
            "metrics": dict(self.metrics),
            "training_range": None if self.training_range is None else list(self.training_range),
            "code_version": self.code_version,
            "feature_version": self.feature_version,
            "description": self.description,
            "model_type": self.model_type,
            "libraries": dict(self.libraries),
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> ModelVersion:
        """Parse ``meta.json``'s content; :class:`ModelError` naming ``where`` if it is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ModelError(f"{where} is not a strom model's metadata (format {found!r})")
        try:
            span = data["training_range"]
            return cls(
                name=str(data["name"]),
                version=int(data["version"]),
                created_ms=int(data["created_ms"]),
                features=tuple(
                    FeatureSpec(str(f["name"]), str(f["dtype"])) for f in data["features"]
                ),
                method=str(data["method"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                golden_rows=int(data["golden_rows"]),
                metrics={str(k): float(v) for k, v in data["metrics"].items()},
                training_range=None if span is None else (str(span[0]), str(span[1])),
                code_version=data["code_version"],
                feature_version=data["feature_version"],
                description=str(data["description"]),
                model_type=str(data["model_type"]),
                libraries={str(k): str(v) for k, v in data["libraries"].items()},
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{where}: damaged metadata ({type(exc).__name__}: {exc})") from exc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True, allow_nan=False)
