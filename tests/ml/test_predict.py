"""``Stream.predict``: build-time checks, one model call per batch, streaming == bounded ==
the model over the same rows, hot reload between batches or at checkpoints, dead letters."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from tests.ml.ml_helpers import FailingModel, training_frame

from strom import MemorySink, MemorySource, Pipeline, PlanError, run_bounded
from strom.ml import ModelStore
from strom.runtime import StreamingExecutor
from strom.runtime.predict import PredictOperator


def _events(n: int = 300, seed: int = 1) -> pl.DataFrame:
    X, _ = training_frame(n, seed)
    return X.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("id"),
        (pl.int_range(pl.len(), dtype=pl.Int64) * 100).alias("ts"),
    )


def _source(events: pl.DataFrame, batch: int = 25, partitions: int = 2) -> MemorySource:
    parts: list[list[pl.DataFrame]] = [[] for _ in range(partitions)]
    for i, start in enumerate(range(0, events.height, batch)):
        parts[i % partitions].append(events.slice(start, batch))
    return MemorySource(parts)


def _pipeline(store: ModelStore, source: MemorySource, sink: MemorySink, **kw: object) -> Pipeline:
    p = Pipeline()
    p.source(source, timestamp="ts").predict(store, "fraud", **kw).sink(sink)  # type: ignore[arg-type]
    return p


def _offline(store: ModelStore, version: int, rows: pl.DataFrame) -> np.ndarray:
    model = store.load("fraud", version)
    return model.model.predict_proba(rows.select("amount", "count"))[:, 1]  # type: ignore[no-any-return]


def test_streaming_equals_bounded_equals_the_model(fraud_store: ModelStore) -> None:
    events = _events()
    streamed, bounded = MemorySink(), MemorySink()
    executor = StreamingExecutor(_pipeline(fraud_store, _source(events), streamed))
    executor.run()
    run_bounded(_pipeline(fraud_store, _source(events), bounded))
    a, b = streamed.to_frame().sort("id"), bounded.to_frame().sort("id")
    assert a.columns == [*events.columns, "score", "model_name", "model_version", "feature_version"]
    assert a.equals(b)
    np.testing.assert_allclose(a["score"].to_numpy(), _offline(fraud_store, 1, events), rtol=1e-12)
    assert set(a["model_name"]) == {"fraud"} and set(a["model_version"]) == {1}
    assert set(a["feature_version"]) == {"fv1"}  # the model's, when the stream names none
    op = next(o for o in executor._operators.values() if isinstance(o, PredictOperator))
    batches = sum(1 for _ in range(0, events.height, 25))
    assert 1 <= op.calls <= batches  # one call per batch (a round's partitions are merged)
    assert op.metrics().detail["model_calls"] == op.calls


def test_build_time_errors_name_the_model_and_column(
    fraud_store: ModelStore, tmp_path: Path
) -> None:
    events = _events(20)
    with pytest.raises(PlanError, match=r"needs feature column 'count', which the stream"):
        _pipeline(fraud_store, MemorySource([[events.drop("count")]]), MemorySink()).plan()
    typed = events.with_columns(pl.col("amount").cast(pl.String))
    with pytest.raises(PlanError, match=r"needs feature 'amount' of type Float64.*type String"):
        _pipeline(fraud_store, MemorySource([[typed]]), MemorySink()).plan()
    with pytest.raises(PlanError, match="has no alias 'canary'"):
        _pipeline(fraud_store, _source(events), MemorySink(), ref="canary").plan()
    with pytest.raises(PlanError, match=r"trained on features of version 'fv1'.*'fv2'"):
        _pipeline(fraud_store, _source(events), MemorySink(), feature_version="fv2").plan()
    with pytest.raises(PlanError, match=r"columns \['score'\] already exist"):
        _pipeline(
            fraud_store, MemorySource([[events.with_columns(score=1.0)]]), MemorySink()
        ).plan()
    path = fraud_store.root / "fraud" / "v1" / "model.skops"
    os.chmod(path, 0o644)
    path.write_bytes(b"not a model")
    with pytest.raises(PlanError, match=r"model 'fraud' v1: .*model\.skops has sha256"):
        _pipeline(ModelStore(fraud_store.root), _source(events), MemorySink()).plan()


def test_a_promotion_switches_between_batches(fraud_store: ModelStore) -> None:
    events = _events(400)
    sink = MemorySink()
    executor = StreamingExecutor(_pipeline(fraud_store, _source(events, 20, 1), sink))
    for _ in range(5):
        executor.step()
    fraud_store.promote("fraud", 2)
    for _ in range(5):
        executor.step()
    fraud_store.promote("fraud", 1)
    executor.run()
    out = sink.to_frame()
    assert out["id"].to_list() == list(range(400))  # none skipped, none twice
    versions = out["model_version"].to_list()
    assert versions == [1] * 100 + [2] * 100 + [1] * 200
    _check_scores_match_versions(fraud_store, out)


def _check_scores_match_versions(store: ModelStore, out: pl.DataFrame) -> None:
    for version in set(out["model_version"]):
        rows = out.filter(pl.col("model_version") == version)
        np.testing.assert_allclose(rows["score"].to_numpy(), _offline(store, version, rows))


def test_hot_reload_under_concurrent_promotions(fraud_store: ModelStore) -> None:
    """A thread promotes v1 and v2 in turn while the pipeline runs: every row is scored once,
    by the version its row names, and each batch by one version."""
    events = _events(3_000)
    sink = MemorySink()
    executor = StreamingExecutor(_pipeline(fraud_store, _source(events, 10, 3), sink))
    stop = threading.Event()

    def flip() -> None:
        promoter = ModelStore(fraud_store.root)  # another writer, as another process would be
        version = 2
        while not stop.is_set():
            promoter.promote("fraud", version)
            version = 3 - version

    executor.step()  # v1 first, then the promotions race the rest of the run
    thread = threading.Thread(target=flip)
    thread.start()
    try:
        executor.run()
    finally:
        stop.set()
        thread.join()
    out = sink.to_frame()
    assert sorted(out["id"].to_list()) == list(range(3_000))
    assert out["model_version"].n_unique() == 2
    _check_scores_match_versions(fraud_store, out)
    per_batch = out.group_by(pl.col("id") // 10).agg(pl.col("model_version").n_unique())
    assert per_batch["model_version"].max() == 1  # each input batch by one version


def test_with_checkpoints_the_version_changes_only_at_a_snapshot(fraud_store: ModelStore) -> None:
    events = _events(400)
    sink = MemorySink()
    executor = StreamingExecutor(_pipeline(fraud_store, _source(events, 20, 1), sink))
    for _ in range(3):
        executor.step()
    executor.snapshot()  # the run takes checkpoints from here on
    fraud_store.promote("fraud", 2)
    for _ in range(3):
        executor.step()
    assert set(sink.to_frame()["model_version"]) == {1}  # not between checkpoints
    snapshot = executor.snapshot()  # the boundary: v2 from here on, and recorded so
    assert snapshot.states["1:Predict"].meta["version"] == 2
    fraud_store.promote("fraud", 1)  # after the checkpoint: a recovery still replays with v2
    rest = MemorySink()
    resumed = StreamingExecutor(
        _pipeline(ModelStore(fraud_store.root), _source(events, 20, 1), rest)
    )
    resumed.restore(snapshot)
    resumed.run()
    assert rest.to_frame()["id"].to_list() == list(range(120, 400))
    assert set(rest.to_frame()["model_version"]) == {2}
    _check_scores_match_versions(fraud_store, rest.to_frame())


def test_a_batch_the_model_raises_on_goes_to_dead_letters(store: ModelStore) -> None:
    X, y = training_frame()
    name = "tests.ml.ml_helpers.FailingModel"
    store = ModelStore(store.root, trusted=[name])
    sample = X.filter(pl.col("amount") < 250)
    store.register(
        "fraud", FailingModel(fail_above=250.0).fit(X, y), sample=sample, alias="production"
    )
    events = _events(200)
    bad_batches = {
        i for i, s in enumerate(range(0, 200, 20)) if events.slice(s, 20)["amount"].max() > 250
    }  # type: ignore[operator]
    assert 0 < len(bad_batches) < 10
    for run in ("streaming", "bounded"):
        sink, dead = MemorySink(), MemorySink()
        pipeline = _pipeline(store, _source(events, 20, 1), sink, dead_letter=dead)
        if run == "streaming":
            StreamingExecutor(pipeline).run()
        else:
            run_bounded(pipeline)
        letters = dead.to_frame()
        if run == "bounded":  # one partition: it fails whole
            assert sink.to_frame().height == 0 and letters.height == 200
            continue
        expected_bad = sorted(i for b in bad_batches for i in range(b * 20, b * 20 + 20))
        assert letters.height == len(expected_bad)
        assert set(letters["reason"]) == {
            "model 'fraud' v1 raised ValueError: amount out of the model's range"
        }
        assert letters["timestamp"].to_list() == [i * 100 for i in expected_bad]
        import json

        assert [json.loads(r)["id"] for r in letters["raw"]] == expected_bad
        good = sink.to_frame()["id"].to_list()
        assert sorted(good + expected_bad) == list(range(200))  # the pipeline went on


class _CountingStore(ModelStore):
    """A store that counts how often a version is read and verified from its files."""

    loads = 0

    def _load(self, name: str, version: int):  # type: ignore[no-untyped-def]
        type(self).loads += 1
        return super()._load(name, version)


def test_the_model_is_loaded_once_per_process(fraud_store: ModelStore) -> None:
    store = _CountingStore(fraud_store.root)
    events = _events(400)
    sink = MemorySink()
    pipeline = _pipeline(store, _source(events, 10, 4), sink)
    executor = StreamingExecutor(pipeline)  # validates: the one load
    executor.run()
    assert sink.to_frame().height == 400
    assert _CountingStore.loads == 1
