"""Model stores for the ML tests, holding small seeded models (see ``ml_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from tests.ml.ml_helpers import training_frame

from strom.ml import ModelStore


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def fraud_store(store: ModelStore) -> ModelStore:
    """``fraud`` v1 (logistic regression, production) and v2 (random forest, staging)."""
    X, y = training_frame()
    store.register("fraud", LogisticRegression().fit(X, y), sample=X, alias="production",
                   metrics={"auc": 0.9}, training_range=(0, 1000), code_version="abc123",
                   feature_version="fv1")  # fmt: skip
    forest = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y)
    store.register("fraud", forest, sample=X, alias="staging", feature_version="fv1")
    return store
