"""Real-time ML: a model store, scoring in the stream, point-in-time-correct training data.

- :class:`ModelStore`: named, versioned, immutable scikit-learn models in skops' format
  (no pickle), each checked on load (sha256, trusted types, features, a golden sample);
  aliases (``production``, ``staging``) that move atomically.
- ``Stream.predict(store, "fraud")`` scores every micro-batch with one model call and
  switches versions between batches (or at checkpoints), each row naming its model version.
- :class:`FeatureView` and :func:`training_set`: one feature definition run bounded over
  history, joined *as of* each label's time to build training data without leaks.

Importing this package loads neither scikit-learn nor skops: they are imported when a model is
written or read (``pip install 'strom[ml]'``).
"""

from strom.ml.features import FeatureView
from strom.ml.metadata import ModelError, ModelVersion
from strom.ml.skops_model import DEFAULT_TRUSTED, SkopsModel
from strom.ml.store import ModelStore
from strom.ml.training import FEATURE_TIME, training_set

__all__ = [
    "DEFAULT_TRUSTED",
    "FEATURE_TIME",
    "FeatureView",
    "ModelError",
    "ModelStore",
    "ModelVersion",
    "SkopsModel",
    "training_set",
]
