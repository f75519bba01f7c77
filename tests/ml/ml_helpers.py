"""Small seeded training data and a custom model class for the ML tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator, ClassifierMixin


def training_frame(n: int = 400, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({"amount": rng.gamma(2.0, 30.0, n), "count": rng.integers(1, 20, n)})
    label = (frame["amount"].to_numpy() / 100 + frame["count"].to_numpy() / 10
             + rng.normal(0, 0.3, n)) > 1.5  # fmt: skip
    return frame, label


class ThresholdModel(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A model class skops does not know: its files need ``trusted=`` to load."""

    def __init__(self, threshold: float = 50.0) -> None:
        self.threshold = threshold

    def fit(self, X: Any, y: Any) -> ThresholdModel:
        self.classes_ = np.array([False, True])
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        p = (np.asarray(X, dtype=float)[:, 0] > self.threshold).astype(float)
        return np.column_stack([1 - p, p])


class FailingModel(ThresholdModel):
    """Raises on any batch holding an amount above ``fail_above``."""

    def __init__(self, threshold: float = 50.0, fail_above: float = 1e9) -> None:
        super().__init__(threshold)
        self.fail_above = fail_above

    def predict_proba(self, X: Any) -> np.ndarray:
        if (np.asarray(X, dtype=float)[:, 0] > self.fail_above).any():
            raise ValueError("amount out of the model's range")
        return super().predict_proba(X)
