"""`monitor model train`: rebuild the detection model from the labelled data, reproducibly.

Inputs (never copied into the repository): `../shared/data/` (English complaint tweets, French
and English sentiment tweets, unlabelled French telecom tweets) and the project's own French
annotations, `training/labels/fr-telecom.csv` (tweet ids and labels only).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from monitor.analysis.model import (
    SENTIMENTS,
    DetectionModel,
    LanguageModel,
    NBLogisticEnsemble,
    lexicon_features,
    new_vectorizer,
)
from monitor.analysis.text import model_text
from monitor.errors import MonitorError

SEED = 0


@dataclass(frozen=True)
class LabelledSet:
    texts: list[str]
    labels: np.ndarray
    source: str


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise MonitorError(f"cannot read training data {path}: {exc}") from None


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def sentiment_label(value: str) -> int:
    value = value.strip().lower()
    if value in SENTIMENTS:
        return SENTIMENTS.index(value)
    if value in ("0", "1", "2"):
        return int(value)
    raise ValueError(f"expected negative/neutral/positive or 0/1/2, got {value!r}")


def training_sets(data_dir: Path, labels: Path) -> dict[tuple[str, str], LabelledSet]:
    sets: dict[tuple[str, str], LabelledSet] = {}
    for lang in ("en", "fr"):
        path = data_dir / "sentiment-umsab" / f"{lang}_train.csv"
        rows = _rows(path)
        sets[(lang, "sentiment")] = LabelledSet(
            [r["text"] for r in rows], np.array([sentiment_label(r["label"]) for r in rows]), str(path)
        )
    path = data_dir / "complaints-en" / "train.csv"
    rows = _rows(path)
    sets[("en", "complaint")] = LabelledSet(
        [r["text"] for r in rows], np.array([int(r["label"]) for r in rows]), str(path)
    )
    tweets = {r["tweet_id"]: r["text"] for r in _rows(data_dir / "fr-telecom-tweets" / "unlabelled.csv")}
    annotated = [r for r in _rows(labels) if r["tweet_id"] in tweets]
    french = [tweets[r["tweet_id"]] for r in annotated]
    # General-topic French tweets (DEFT) join as non-complaints and non-churn: the telecom tweets
    # are mostly complaints, and without them any French post would look like one.
    general = sets[("fr", "sentiment")].texts
    none = np.zeros(len(general), dtype=int)
    for task in ("complaint", "churn"):
        labelled = np.array([int(r[task]) for r in annotated])
        sets[("fr", task)] = LabelledSet(french + general, np.r_[labelled, none], str(labels))
    return sets


def _features(vectorizer: object, texts: Sequence[str], lang: str) -> sp.csr_matrix:
    return sp.hstack([vectorizer.transform(texts), lexicon_features(texts, lang)]).tocsr()  # type: ignore[attr-defined]


def sentiment_classifier() -> LogisticRegression:
    return LogisticRegression(C=1.0, max_iter=3000)


def complaint_classifier() -> NBLogisticEnsemble:
    return NBLogisticEnsemble(C=3.0)


def fit_language(
    lang: str, sentiment: LabelledSet, complaint: LabelledSet | None, churn: LabelledSet | None = None
) -> LanguageModel:
    sentiment_texts = [model_text(t) for t in sentiment.texts]
    complaint_texts = [model_text(t) for t in complaint.texts] if complaint else []
    vectorizer = new_vectorizer().fit(sentiment_texts + complaint_texts)
    model = LanguageModel(
        lang,
        vectorizer,
        sentiment_classifier().fit(_features(vectorizer, sentiment_texts, lang), sentiment.labels),
    )
    if complaint is not None and len(set(complaint.labels.tolist())) == 2:
        complaint_features = _features(vectorizer, complaint_texts, lang)
        model.complaint = complaint_classifier().fit(complaint_features, complaint.labels)
        if churn is not None and len(set(churn.labels.tolist())) == 2:
            model.churn = complaint_classifier().fit(complaint_features, churn.labels)
    return model


def train(data_dir: Path, labels: Path) -> DetectionModel:
    sets = training_sets(data_dir, labels)
    languages = {
        lang: fit_language(
            lang, sets[(lang, "sentiment")], sets.get((lang, "complaint")), sets.get((lang, "churn"))
        )
        for lang in ("en", "fr")
    }
    sources = sorted(
        {Path(s.source) for s in sets.values()} | {data_dir / "fr-telecom-tweets" / "unlabelled.csv"}
    )
    return DetectionModel(
        languages,
        metadata={
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "examples": {f"{lang}/{task}": len(s.texts) for (lang, task), s in sets.items()},
            "inputs_sha256": _digest(*sources),
            "features": "tf-idf word 1-2 + char 2-4 n-grams, polarity lexicon (VADER / vaderSentiment_fr)",
        },
    )


def cross_validate(
    texts: Sequence[str], labels: np.ndarray, lang: str, task: str, folds: int = 10
) -> np.ndarray:
    """Out-of-fold predictions: complaint probabilities, or sentiment classes."""
    prepared = [model_text(t) for t in texts]
    out = np.zeros(len(prepared), dtype=float)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    for train_idx, test_idx in splitter.split(prepared, labels):
        train_texts = [prepared[i] for i in train_idx]
        vectorizer = new_vectorizer().fit(train_texts)
        train_features = _features(vectorizer, train_texts, lang)
        test_features = _features(vectorizer, [prepared[i] for i in test_idx], lang)
        if task == "sentiment":
            sentiment = sentiment_classifier().fit(train_features, labels[train_idx])
            out[test_idx] = sentiment.predict(test_features)
        else:
            complaint = complaint_classifier().fit(train_features, labels[train_idx])
            out[test_idx] = complaint.predict_proba(test_features)[:, 1]
    return out
