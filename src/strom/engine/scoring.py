"""Scoring a frame with a model: the contract between a model store and every backend.

The plan's ``PredictNode`` holds a :class:`ModelProvider` (``strom.ml.ModelStore`` is one) and
names a model and a reference (a version number or an alias such as ``"production"``). Backends
resolve the reference to a :class:`ScoringModel` and call :func:`score_frame` once per batch:
one vectorized model call per micro-batch (streaming) or per partition (bounded), never one per
row. Nothing here imports a machine-learning library: a model's own module does, when loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

__all__ = [
    "LINEAGE_COLUMNS",
    "PREDICTION_COLUMNS",
    "FeatureSpec",
    "ModelProvider",
    "ScoringModel",
    "check_features",
    "prediction_schema",
    "score_frame",
]

#: The columns every prediction row gains besides the score: which model and version scored
#: it, and the version of the feature definition its inputs came from (null if unknown).
PREDICTION_COLUMNS = pl.Schema(
    {"model_name": pl.String(), "model_version": pl.Int64(), "feature_version": pl.String()}
)

#: A ``KafkaSource``'s columns naming where an event came from; a prediction row keeps them
#: when its input has them (lineage from the score back to the triggering record).
LINEAGE_COLUMNS = ("_topic", "_partition", "_offset")


@dataclass(frozen=True)
class FeatureSpec:
    """One input column a model expects: its name and its Polars type (``"Float64"``)."""

    name: str
    dtype: str


@runtime_checkable
class ScoringModel(Protocol):
    """One loaded, verified model version, ready to score."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def features(self) -> Sequence[FeatureSpec]:
        """The input columns, in the order the model takes them."""
        ...

    @property
    def feature_version(self) -> str | None:
        """The feature definition's version the model was trained on (None if not recorded)."""
        ...

    def score(self, features: pl.DataFrame) -> np.ndarray:
        """One score per row of ``features`` (exactly the :attr:`features` columns, in order),
        as a 1-D float array. May raise: the caller routes the batch aside."""
        ...


@runtime_checkable
class ModelProvider(Protocol):
    """Where a plan's models come from (``strom.ml.ModelStore``)."""

    def resolve(self, name: str, ref: str | int) -> int:
        """The version number ``ref`` names now (an alias is read afresh on every call)."""
        ...

    def load(self, name: str, version: int) -> ScoringModel:
        """The verified model of ``name`` version ``version`` (loaded once, then cached);
        raises an error naming the model and the file when it cannot be trusted or read."""
        ...

    def changed(self, name: str) -> object:
        """A cheap token that changes whenever one of ``name``'s aliases may have changed
        (compared between batches to decide whether to :meth:`resolve` again)."""
        ...


def check_features(model: ScoringModel, schema: pl.Schema) -> str | None:
    """Why ``schema`` cannot feed ``model`` (a missing column or a column of another kind of
    type), or None. Numeric features accept any numeric column (scored as Float64)."""
    for spec in model.features:
        if spec.name not in schema:
            return (
                f"model {model.name!r} v{model.version} needs feature column {spec.name!r}, "
                f"which the stream does not have; its columns: {list(schema)}"
            )
        found = schema[spec.name]
        if _kind(str(found)) != _kind(spec.dtype):
            return (
                f"model {model.name!r} v{model.version} needs feature {spec.name!r} of type "
                f"{spec.dtype}, but the stream's column has type {found}"
            )
    return None


def _kind(dtype: str) -> str:
    if dtype.startswith(("Int", "UInt", "Float", "Decimal")):
        return "numeric"
    return dtype


def prediction_schema(up: pl.Schema, output: str) -> pl.Schema:
    """The input columns, then ``output`` (Float64), then :data:`PREDICTION_COLUMNS`."""
    return pl.Schema({**up, output: pl.Float64(), **PREDICTION_COLUMNS})


def score_frame(
    model: ScoringModel, batch: pl.DataFrame, output: str, feature_version: str | None
) -> pl.DataFrame:
    """``batch`` with its score (one model call for the whole batch) and the model's name and
    version and ``feature_version`` on every row (an empty batch is not scored). Raises
    whatever the model raises, and
    ``ValueError`` if it returns the wrong number of scores."""
    names = [f.name for f in model.features]
    if batch.height == 0:  # models refuse zero rows; nothing to score is no model call
        scores = np.empty(0, dtype=np.float64)
    else:
        scores = np.asarray(model.score(batch.select(names)), dtype=np.float64).reshape(-1)
    if scores.shape[0] != batch.height:
        raise ValueError(
            f"model {model.name!r} v{model.version} returned {scores.shape[0]} scores for "
            f"{batch.height} rows"
        )
    return batch.with_columns(
        pl.Series(output, scores, dtype=pl.Float64),
        pl.lit(model.name, dtype=pl.String).alias("model_name"),
        pl.lit(model.version, dtype=pl.Int64).alias("model_version"),
        pl.lit(feature_version, dtype=pl.String).alias("feature_version"),
    )
