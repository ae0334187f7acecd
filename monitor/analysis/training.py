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
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import FeatureUnion

from monitor.analysis import embeddings
from monitor.analysis.model import (
    LEXICON_COLUMNS,
    DetectionModel,
    LanguageModel,
    LinearClassifier,
    TfidfFeatures,
    lexicon_features,
    sentiment_label,
)
from monitor.analysis.text import model_text
from monitor.errors import MonitorError

SEED = 0
# Languages whose complaint score adds the sentence-embedding head when monitor[ml] is installed:
# measured worth it in English; French keeps the n-gram model (its own annotations fit it well).
EMBEDDED_LANGUAGES = ("en",)
# Words that carry weight in a model but explain nothing to a support agent (stored in the model).
STOPWORDS = frozenset(ENGLISH_STOP_WORDS) | frozenset(
    "alors au aux avec ce ces cet cette dans de des du elle en est et etre eux il ils je la le les leur lui ma "
    "mais me meme mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi "
    "ton tu un une vos votre vous y ça ca été être avoir ai as avez avons ont suis es sommes êtes sont fait "
    "faire plus très tres tout tous toute toutes bien aussi encore comme si non oui là c'est j'ai vais va "
    "user url".split()
)


def new_vectorizer() -> FeatureUnion:
    return FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32)),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True, dtype=np.float32
                ),
            ),
        ]
    )


class NBLogisticEnsemble:
    """Mean of two logistic regressions: one on the features, one on the features scaled by
    their naive-Bayes log-count ratio (NBSVM, Wang & Manning 2012). Cross-validated, the pair
    beats either alone on short complaint texts, for one extra dot product."""

    def __init__(self, C: float = 3.0) -> None:
        self.C = C

    def fit(self, features: sp.csr_matrix, labels: np.ndarray) -> NBLogisticEnsemble:
        present = (features != 0).astype(np.float32)
        positive = np.asarray(present[labels == 1].sum(axis=0)).ravel() + 1
        negative = np.asarray(present[labels == 0].sum(axis=0)).ravel() + 1
        self.ratio_ = np.log((positive / positive.sum()) / (negative / negative.sum())).astype(np.float32)
        self.ratio_[-LEXICON_COLUMNS:] = 1.0  # lexicon scores are signed: keep them as they are
        self.plain_ = LogisticRegression(C=self.C, max_iter=3000, class_weight="balanced").fit(
            features, labels
        )
        self.scaled_ = LogisticRegression(C=self.C, max_iter=3000, class_weight="balanced").fit(
            features.multiply(self.ratio_).tocsr(), labels
        )
        self.classes_ = self.plain_.classes_
        return self

    def predict_proba(self, features: sp.csr_matrix) -> np.ndarray:
        scaled = features.multiply(self.ratio_).tocsr()
        return (self.plain_.predict_proba(features) + self.scaled_.predict_proba(scaled)) / 2


def compile_features(vectorizer: TfidfVectorizer) -> TfidfFeatures:
    """The fitted vectoriser as the runtime needs it; refuses settings the runtime does not mirror."""
    params = vectorizer.get_params()
    expected = {
        "lowercase": True,
        "strip_accents": None,
        "stop_words": None,
        "norm": "l2",
        "sublinear_tf": True,
    }
    if params["analyzer"] not in ("word", "char_wb") or any(params[k] != v for k, v in expected.items()):
        raise ValueError(f"the runtime cannot reproduce this vectoriser: {params}")
    terms = [str(t) for t in vectorizer.get_feature_names_out()]
    return TfidfFeatures(
        params["analyzer"], tuple(params["ngram_range"]), terms, vectorizer.idf_.astype(np.float32)
    )


def compile_classifier(classifier: LogisticRegression | NBLogisticEnsemble) -> LinearClassifier:
    """Coefficients only; the ensemble's naive-Bayes scaling is folded into its second member."""
    if isinstance(classifier, NBLogisticEnsemble):
        members = [
            (classifier.plain_.coef_, classifier.plain_.intercept_),
            (classifier.scaled_.coef_ * classifier.ratio_, classifier.scaled_.intercept_),
        ]
    else:
        members = [(classifier.coef_, classifier.intercept_)]
    return LinearClassifier(
        np.stack([np.asarray(w, dtype=np.float32) for w, _ in members]),
        np.stack([np.asarray(b, dtype=np.float64) for _, b in members]),
    )


def compile_language(
    lang: str,
    vectorizer: FeatureUnion,
    sentiment: LogisticRegression,
    complaint: NBLogisticEnsemble | None = None,
    churn: NBLogisticEnsemble | None = None,
) -> LanguageModel:
    parts = dict(vectorizer.transformer_list)
    return LanguageModel(
        lang,
        compile_features(parts["words"]),
        compile_features(parts["chars"]),
        compile_classifier(sentiment),
        compile_classifier(complaint) if complaint is not None else None,
        compile_classifier(churn) if churn is not None else None,
    )


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


def embedding_classifier() -> LogisticRegression:
    """The complaint head on sentence embeddings (C chosen by 10-fold cross-validation)."""
    return LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced")


def fit_language(
    lang: str, sentiment: LabelledSet, complaint: LabelledSet | None, churn: LabelledSet | None = None
) -> LanguageModel:
    sentiment_texts = [model_text(t) for t in sentiment.texts]
    complaint_texts = [model_text(t) for t in complaint.texts] if complaint else []
    vectorizer = new_vectorizer().fit(sentiment_texts + complaint_texts)
    sentiment_model = sentiment_classifier().fit(
        _features(vectorizer, sentiment_texts, lang), sentiment.labels
    )
    complaint_model = churn_model = None
    encoded = None
    if complaint is not None and len(set(complaint.labels.tolist())) == 2:
        complaint_features = _features(vectorizer, complaint_texts, lang)
        complaint_model = complaint_classifier().fit(complaint_features, complaint.labels)
        if churn is not None and len(set(churn.labels.tolist())) == 2:
            churn_model = complaint_classifier().fit(complaint_features, churn.labels)
        if lang in EMBEDDED_LANGUAGES and embeddings.available():
            encoded = embedding_classifier().fit(embeddings.embed(complaint_texts), complaint.labels)
    compiled = compile_language(lang, vectorizer, sentiment_model, complaint_model, churn_model)
    compiled.complaint_embedding = compile_classifier(encoded) if encoded is not None else None
    return compiled


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
        stopwords=STOPWORDS,
        metadata={
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "examples": {f"{lang}/{task}": len(s.texts) for (lang, task), s in sets.items()},
            "inputs_sha256": _digest(*sources),
            "features": "tf-idf word 1-2 + char 2-4 n-grams, polarity lexicon (VADER / vaderSentiment_fr)",
            "embeddings": embeddings.ENCODER if embeddings.available() else None,
        },
    )


def cross_validate(
    texts: Sequence[str],
    labels: np.ndarray,
    lang: str,
    task: str,
    folds: int = 10,
    *,
    use_embeddings: bool = True,
) -> np.ndarray:
    """Out-of-fold predictions: complaint probabilities, or sentiment classes."""
    prepared = [model_text(t) for t in texts]
    out = np.zeros(len(prepared), dtype=float)
    encoded = (
        embeddings.embed(prepared)
        if use_embeddings and task != "sentiment" and lang in EMBEDDED_LANGUAGES and embeddings.available()
        else None
    )
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
            if encoded is not None:  # as the product scores: blended with the embedding head
                head = embedding_classifier().fit(encoded[train_idx], labels[train_idx])
                held = head.predict_proba(encoded[test_idx])[:, 1]  # already encoded: score them all
                out[test_idx] = embeddings.blend(out[test_idx], held.__getitem__)
    return out
