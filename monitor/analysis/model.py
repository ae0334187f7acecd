"""The trained detection model: per language, one feature extractor and two linear classifiers.

Features are word (1-2) and character (2-4) n-grams (tf-idf) plus three polarity-lexicon
scores; on top sit a 3-class sentiment classifier and a complaint classifier. One vectorising
pass per batch serves both, which is what keeps enrichment fast. The artifact ships in
`monitor/data/models/` and is rebuilt by `monitor model train`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from monitor.analysis import lexicon
from monitor.analysis.text import model_text
from monitor.errors import MonitorError

log = logging.getLogger(__name__)
SENTIMENTS = ("negative", "neutral", "positive")
LEXICON_WEIGHT = 2.0
LEXICON_COLUMNS = 3
# Words that carry weight in a model but explain nothing to a support agent.
STOPWORDS = frozenset(ENGLISH_STOP_WORDS) | frozenset(
    "alors au aux avec ce ces cet cette dans de des du elle en est et etre eux il ils je la le les leur lui ma "
    "mais me meme mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi "
    "ton tu un une vos votre vous y ça ca été être avoir ai as avez avons ont suis es sommes êtes sont fait "
    "faire plus très tres tout tous toute toutes bien aussi encore comme si non oui là c'est j'ai vais va "
    "user url".split()
)
MODEL_FILE = "detection.joblib"
FORMAT_VERSION = 1


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


def lexicon_features(texts: Sequence[str], lang: str) -> sp.csr_matrix:
    rows = [lexicon.scores(text, lang) for text in texts]
    return sp.csr_matrix(np.asarray(rows, dtype=np.float32).reshape(len(rows), 3) * LEXICON_WEIGHT)


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
        # Per-feature weights in the original feature space, for explanations.
        self.coef_ = (self.plain_.coef_ + self.scaled_.coef_ * self.ratio_) / 2
        return self

    def predict_proba(self, features: sp.csr_matrix) -> np.ndarray:
        scaled = features.multiply(self.ratio_).tocsr()
        return (self.plain_.predict_proba(features) + self.scaled_.predict_proba(scaled)) / 2


@dataclass
class LanguageModel:
    lang: str
    vectorizer: FeatureUnion
    sentiment: LogisticRegression
    complaint: NBLogisticEnsemble | LogisticRegression | None = None
    churn: NBLogisticEnsemble | LogisticRegression | None = None
    _words: np.ndarray | None = field(default=None, repr=False)

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        prepared = [model_text(t) for t in texts]
        return sp.hstack([self.vectorizer.transform(prepared), lexicon_features(prepared, self.lang)]).tocsr()

    def word_names(self) -> np.ndarray:
        if self._words is None:
            self._words = self.vectorizer.transformer_list[0][1].get_feature_names_out()
        return self._words

    def top_words(self, features: sp.csr_matrix, row: int, classifier: Any, k: int = 4) -> list[str]:
        """The word n-grams that pushed this text's score up most: the model's evidence."""
        names = self.word_names()
        start, end = features.indptr[row], features.indptr[row + 1]
        columns, values = features.indices[start:end], features.data[start:end]
        in_words = columns < len(names)
        columns, values = columns[in_words], values[in_words]
        coef = classifier.coef_[-1] if classifier.coef_.shape[0] > 1 else classifier.coef_[0]
        contributions = values * coef[columns]
        words: list[str] = []
        for i in np.argsort(-contributions):
            if contributions[i] <= 0 or len(words) == k:
                break
            name = str(names[columns[i]])
            if not all(token in STOPWORDS or len(token) < 3 for token in name.split()):
                words.append(name)
        return words


@dataclass(frozen=True, slots=True)
class Scores:
    sentiment: float  # P(positive) - P(negative), in [-1, 1]
    sentiment_label: str
    complaint: float | None
    complaint_words: tuple[str, ...] = ()
    churn: float | None = None  # probability from the churn classifier, where a language has one
    churn_words: tuple[str, ...] = ()


@dataclass
class DetectionModel:
    languages: dict[str, LanguageModel]
    metadata: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def analyse(self, texts: Sequence[str], lang: str, explain_above: float = 0.5) -> list[Scores | None]:
        """Scores for texts of one language (None for all when the language has no model)."""
        model = self.languages.get(lang)
        if model is None or not texts:
            return [None] * len(texts)
        features = model.features(texts)
        sentiment = model.sentiment.predict_proba(features)
        complaint = model.complaint.predict_proba(features)[:, 1] if model.complaint is not None else None
        churn = model.churn.predict_proba(features)[:, 1] if model.churn is not None else None
        results: list[Scores | None] = []
        for row in range(len(texts)):
            negative, _neutral, positive = sentiment[row]
            score = float(complaint[row]) if complaint is not None else None
            words: tuple[str, ...] = ()
            if score is not None and score >= explain_above and model.complaint is not None:
                words = tuple(model.top_words(features, row, model.complaint))
            churn_score = float(churn[row]) if churn is not None else None
            churn_words: tuple[str, ...] = ()
            if churn_score is not None and churn_score >= explain_above and model.churn is not None:
                churn_words = tuple(model.top_words(features, row, model.churn))
            results.append(
                Scores(
                    sentiment=round(float(positive - negative), 4),
                    sentiment_label=SENTIMENTS[int(np.argmax(sentiment[row]))],
                    complaint=round(score, 4) if score is not None else None,
                    complaint_words=words,
                    churn=round(churn_score, 4) if churn_score is not None else None,
                    churn_words=churn_words,
                )
            )
        return results

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for model in self.languages.values():
            model._words = None
        joblib.dump(self, path, compress=3)


def bundled_model_path() -> Path:
    return Path(str(resources.files("monitor.data").joinpath("models", MODEL_FILE)))


@cache
def load_model(path: str | None = None) -> DetectionModel:
    """The shipped model (or one at `path`), loaded once per process."""
    target = Path(path) if path else bundled_model_path()
    try:
        model = joblib.load(target)
    except FileNotFoundError:
        raise MonitorError(
            f"detection model not found at {target}; rebuild it with `monitor model train`"
        ) from None
    if not isinstance(model, DetectionModel) or model.format_version != FORMAT_VERSION:
        raise MonitorError(
            f"{target} is not a detection model of this version; rebuild it with `monitor model train`"
        )
    return model
