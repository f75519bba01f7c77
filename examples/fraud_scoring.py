"""Card fraud, end to end: features from a stream, a trained model scoring them, SQLite online.

Everything is synthetic and seeded (nothing here is real data): cards with a home country and a
typical amount pay at random times; three fraud patterns are mixed in, each payment labelled:
bursts of small "card testing" payments, amounts far above the card's usual, and a payment in a
far-away country minutes after one at home.

1. **History → training data.** The feature view ``card_1m`` (per card, 1-minute tumbling
   windows: payments, total, largest and mean amount, distinct countries) runs bounded over
   the history; :func:`strom.ml.training_set` joins each labelled payment to its card's
   features *as of* the payment's time (windows that ended by then, at most 5 minutes old), so
   no feature holds the payment itself or anything after it. A logistic regression is trained
   on it and registered in a model store (``production``), with the view's version.
2. **Live.** A strom broker starts in-process and the live payments are produced as JSON to
   the topic ``payments`` (3 partitions). The pipeline reads them with ``KafkaSource``,
   computes the same view, upserts each card's latest features into SQLite ``card_features``
   (the online store other programs read), scores every closed window with the model
   (``Stream.predict``: one call per micro-batch), appends the scores to ``card_scores`` and
   upserts each card's latest risk into ``card_risk``.
3. **Checks** (exit 1 on any mismatch): the online features equal the view computed offline
   over the same payments; every streamed score equals the registered model's score of the
   offline features of the same window, for the version the score's row names. Then the live
   payments are joined, as of their time, to the streamed scores (the risk the authorizer
   would have read): precision, recall and ROC AUC are printed, and the scores are joined with
   the ``cards`` table in SQL.

Run it: ``python examples/fraud_scoring.py [--dir DIR] [--cards N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
from confluent_kafka import Producer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from strom import Broker, KafkaSource, Pipeline, SQLiteSink, Tumbling, agg, run_streaming
from strom.ml import FeatureView, ModelStore, training_set

PAYMENT = pl.Schema(
    {"ts": pl.Int64(), "card": pl.String(), "amount": pl.Float64(), "country": pl.String()}
)
COUNTRIES = ["FR", "DE", "ES", "IT", "NL", "BE"]
FAR_AWAY = ["BR", "TH", "NG", "VN", "PE"]
MINUTE = 60_000

VIEW = FeatureView(
    "card_1m",
    keys=("card",),
    window=Tumbling(timedelta(minutes=1)),
    aggs=(
        agg.count(name="payments"),
        agg.sum("amount", name="total"),
        agg.max("amount", name="largest"),
        agg.mean("amount", name="mean_amount"),
        agg.count_distinct("country", name="countries"),
    ),
    timestamp="ts",
    input_schema=PAYMENT,
)
FEATURES = VIEW.feature_names
TTL = timedelta(minutes=5)


def payments(cards: int, minutes: int, seed: int, start_ms: int = 0) -> pl.DataFrame:
    """Seeded payments of ``cards`` cards over ``minutes`` minutes, with ``is_fraud``."""
    rng = np.random.default_rng(seed)
    homes = rng.choice(COUNTRIES, cards)
    typical = rng.lognormal(3.0, 0.6, cards)
    rows: list[tuple[int, str, float, str, bool]] = []
    span = minutes * MINUTE
    for c in range(cards):
        card = f"card-{seed}-{c:04d}"
        for t in np.sort(rng.integers(0, span, rng.poisson(minutes / 15))):
            country = homes[c] if rng.random() < 0.95 else rng.choice(COUNTRIES)
            rows.append(
                (int(t), card, float(rng.lognormal(np.log(typical[c]), 0.4)), country, False)
            )
        if rng.random() < 0.06:  # card testing: a burst of small payments over a few minutes
            t0 = int(rng.integers(0, span - 5 * MINUTE))
            for t in np.sort(rng.integers(t0, t0 + 4 * MINUTE, rng.integers(6, 16))):
                rows.append((int(t), card, float(rng.uniform(0.5, 3.0)), str(homes[c]), True))
        if rng.random() < 0.04:  # an amount far above the card's usual
            t = int(rng.integers(0, span))
            rows.append((t, card, float(typical[c] * rng.uniform(8, 20)), str(homes[c]), True))
        if rng.random() < 0.04:  # far away, minutes after a payment at home
            t = int(rng.integers(0, span - 15 * MINUTE))
            rows.append(
                (t, card, float(rng.lognormal(np.log(typical[c]), 0.4)), str(homes[c]), False)
            )
            later = t + int(rng.integers(2, 10)) * MINUTE
            rows.append(
                (
                    later,
                    card,
                    float(typical[c] * rng.uniform(1, 4)),
                    str(rng.choice(FAR_AWAY)),
                    True,
                )
            )
    frame = pl.DataFrame(rows, schema={**PAYMENT, "is_fraud": pl.Boolean()}, orient="row")
    return frame.with_columns(pl.col("ts") + start_ms).sort("ts", "card")


def labelled(history: pl.DataFrame, features: pl.DataFrame) -> pl.DataFrame:
    """Each payment with its card's features as of its time; rows with none are dropped."""
    labels = history.select("card", "ts", "is_fraud")
    joined = training_set(labels, features, keys="card", label_time="ts", ttl=TTL, columns=FEATURES)
    return joined.drop_nulls(FEATURES)


def train(store: ModelStore, history: pl.DataFrame) -> int:
    """Train on the history's first 80 % (by time), measure on the rest, register; the version."""
    features = VIEW.compute_frame(history)
    data = labelled(history, features)
    cut = int(data["ts"].quantile(0.8))  # type: ignore[arg-type]
    fit, test = data.filter(pl.col("ts") < cut), data.filter(pl.col("ts") >= cut)
    model = LogisticRegression(max_iter=1_000, class_weight="balanced")
    model.fit(fit.select(FEATURES), fit["is_fraud"].to_numpy())
    auc = roc_auc_score(
        test["is_fraud"].to_numpy(), model.predict_proba(test.select(FEATURES))[:, 1]
    )
    meta = store.register(
        "fraud",
        model,
        sample=fit.select(FEATURES),
        metrics={"holdout_auc": float(auc), "train_rows": fit.height},
        training_range=(int(history["ts"].min()), int(history["ts"].max())),  # type: ignore[arg-type]
        feature_version=VIEW.version,
        description="card fraud risk from the card's last closed 1-minute windows",
        alias="production",
    )
    print(f"trained fraud v{meta.version} on {fit.height} payments: holdout ROC AUC {auc:.3f}")
    return meta.version


def build(bootstrap: str, store: ModelStore, db: Path) -> Pipeline:
    """The live pipeline: Kafka → the view → online features, scores and risk in SQLite."""
    p = Pipeline()
    source = KafkaSource(bootstrap, "payments", schema=PAYMENT, bounded=True,
                         dead_letter=SQLiteSink(db, "dead_letters"))  # fmt: skip
    live = p.source(source, timestamp="ts", max_out_of_orderness_ms=5_000)
    windows = VIEW.apply(live.select(*PAYMENT))
    windows.sink(SQLiteSink(db, "card_features", key=["card"], mode="upsert"))
    scores = windows.predict(store, "fraud", output="risk", feature_version=VIEW.version)
    scores.sink(SQLiteSink(db, "card_scores"))
    scores.select("card", "window_end", "risk", "model_version").sink(
        SQLiteSink(db, "card_risk", key=["card"], mode="upsert")
    )
    return p


def produce(bootstrap: str, live: pl.DataFrame) -> None:
    # log_level 3: errors only (not the disconnect notice when the broker stops)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3})
    for row in live.select(*PAYMENT).iter_rows(named=True):
        producer.produce("payments", key=row["card"].encode(), value=json.dumps(row).encode())
    producer.produce("payments", key=b"?", value=b"{not json")  # lands in dead_letters
    if producer.flush(30) != 0:
        raise RuntimeError("payments were not all delivered")


def check(store: ModelStore, live: pl.DataFrame, db: Path) -> list[str]:
    """The self-checks; one sentence per mismatch."""
    problems = []
    with sqlite3.connect(db) as conn:
        online = pl.read_database("SELECT * FROM card_features", conn)
        streamed = pl.read_database("SELECT * FROM card_scores", conn)
    offline = VIEW.compute_frame(live.select(*PAYMENT))
    latest = offline.sort("window_end").group_by("card").last()
    columns = ["card", "window_end", *FEATURES]
    a, b = online.select(columns).sort("card"), latest.select(columns).sort("card")
    if a.height != b.height or not np.allclose(
        a.select(FEATURES).to_numpy(), b.select(FEATURES).to_numpy()
    ):
        problems.append("the online features differ from the offline features of the same payments")
    if not a.select("card", "window_end").equals(b.select("card", "window_end")):
        problems.append("the online features are not each card's latest window")
    joined = streamed.join(offline, on=["card", "window_start"], suffix="_offline")
    if joined.height != offline.height or streamed.height != offline.height:
        problems.append(f"{streamed.height} windows scored, {offline.height} computed offline")
    for (version,), rows in joined.group_by("model_version"):
        model = store.load("fraud", int(version))
        expected = model.score(rows.select([f"{f}_offline" for f in FEATURES]).rename(
            {f"{f}_offline": f for f in FEATURES}))  # fmt: skip
        if not np.allclose(rows["risk"].to_numpy(), expected, rtol=1e-9):
            problems.append(f"scores of v{version} differ from the model over offline features")
    return problems


def evaluate(live: pl.DataFrame, db: Path) -> dict[str, float | int]:
    """Each live payment joined to its card's streamed risk as of its time."""
    with sqlite3.connect(db) as conn:
        risk = pl.read_database("SELECT card, window_end, risk FROM card_scores", conn)
    seen = training_set(live.select("card", "ts", "is_fraud"), risk, keys="card",
                        label_time="ts", ttl=TTL, columns=["risk"]).drop_nulls("risk")  # fmt: skip
    y, score = seen["is_fraud"].to_numpy(), seen["risk"].to_numpy()
    alert = score >= 0.5
    return {
        "payments_scored": seen.height,
        "precision": float(precision_score(y, alert, zero_division=0)),
        "recall": float(recall_score(y, alert, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the store and db go")
    parser.add_argument("--cards", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="strom-fraud-"))
    work.mkdir(parents=True, exist_ok=True)
    store, db = ModelStore(work / "models"), work / "fraud.db"
    history = payments(args.cards, 8 * 60, args.seed)
    live = payments(args.cards, 60, args.seed + 1, start_ms=8 * 60 * MINUTE)
    print(f"history: {history.height} payments ({history['is_fraud'].sum()} fraudulent); "
          f"live: {live.height} ({live['is_fraud'].sum()})")  # fmt: skip
    train(store, history)
    with Broker(work / "broker") as broker:
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        for future in admin.create_topics([NewTopic("payments", 3, 1)]).values():
            future.result(15)
        produce(broker.bootstrap_servers, live)
        run_streaming(build(broker.bootstrap_servers, store, db))
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS cards (card TEXT PRIMARY KEY, home TEXT)")
        homes = live.group_by("card").agg(pl.col("country").mode().first()).rows()
        conn.executemany("INSERT OR REPLACE INTO cards VALUES (?, ?)", homes)
        top = conn.execute(
            "SELECT r.card, c.home, round(r.risk, 3) FROM card_risk r JOIN cards c USING (card) "
            "ORDER BY r.risk DESC LIMIT 3"
        ).fetchall()
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    print(f"riskiest cards now (joined with the cards table in SQL): {top}; dead letters: {dead}")
    metrics = evaluate(live, db)
    print("live: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))
    problems = check(store, live, db)
    for problem in problems:
        print(f"MISMATCH: {problem}", file=sys.stderr)
    print(
        "checks: "
        + ("FAILED" if problems else "online == offline features, every score recomputed")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
