"""The trained detection model: per language, one feature extractor and linear classifiers.

Features are word (1-2) and character (2-4) n-grams (tf-idf) plus three polarity-lexicon
scores; on top sit a 3-class sentiment classifier, a complaint classifier and (French) a churn
classifier. One vectorising pass per batch serves them all, which is what keeps enrichment fast.

Training uses scikit-learn (`monitor/analysis/training.py`, `monitor model train`); the shipped
artifact holds only what inference needs, as plain arrays in a `.npz` file: vocabularies, idf
weights, coefficients. Running it needs NumPy and SciPy, not scikit-learn (about 100 MB of
memory and a second of start-up saved), and loading it unpickles nothing, so a model file can
never run code. `training.compile_language` produces it from the fitted scikit-learn objects; a
test checks that both give the same probabilities.
"""

from __future__ import annotations

import importlib
import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import scipy.sparse as sp

from monitor.analysis import embeddings, lexicon
from monitor.analysis.text import model_text
from monitor.errors import MonitorError

SENTIMENTS = ("negative", "neutral", "positive")
LEXICON_WEIGHT = 2.0
LEXICON_COLUMNS = 3
MODEL_FILE = "detection.npz"
FORMAT_VERSION = 2
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
WORD_CACHE = 50_000  # words whose character n-gram columns are remembered (a few MB)
# `complaint_embedding` reads sentence embeddings (monitor[ml]), the others the n-gram features.
_CLASSIFIERS = ("sentiment", "complaint", "churn", "complaint_embedding")


def sentiment_label(value: str) -> int:
    """A sentiment label as written in a labels file: a name or its index."""
    value = value.strip().lower()
    if value in SENTIMENTS:
        return SENTIMENTS.index(value)
    if value in ("0", "1", "2"):
        return int(value)
    raise ValueError(f"expected negative/neutral/positive or 0/1/2, got {value!r}")


def lexicon_features(texts: Sequence[str], lang: str) -> sp.csr_matrix:
    rows = [lexicon.scores(text, lang) for text in texts]
    return sp.csr_matrix(np.asarray(rows, dtype=np.float32).reshape(len(rows), 3) * LEXICON_WEIGHT)


def word_ngrams(text: str, low: int, high: int) -> list[str]:
    """Lower-cased word n-grams, exactly as scikit-learn's `analyzer="word"` makes them."""
    tokens = _TOKEN.findall(text.lower())
    grams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


def char_wb_ngrams(text: str, low: int, high: int) -> list[str]:
    """Character n-grams inside space-padded words, as scikit-learn's `analyzer="char_wb"`."""
    grams: list[str] = []
    for word in text.lower().split():
        grams.extend(_word_char_ngrams(word, low, high))
    return grams


def _word_char_ngrams(word: str, low: int, high: int) -> list[str]:
    padded = f" {word} "
    size = len(padded)
    grams: list[str] = []
    for n in range(low, high + 1):
        if size <= n:  # a short word counts once, whole
            grams.append(padded)
            break
        grams.extend([padded[i : i + n] for i in range(size - n + 1)])
    return grams


@dataclass
class TfidfFeatures:
    """A fitted tf-idf vectoriser: sublinear tf, idf weights, rows scaled to unit length."""

    analyzer: str  # "word" or "char_wb"
    ngram_range: tuple[int, int]
    terms: list[str]  # column order
    idf: np.ndarray
    vocabulary: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.vocabulary:
            self.vocabulary = {term: i for i, term in enumerate(self.terms)}
        # Character n-grams never cross words, and words repeat: their columns are kept per word.
        self._word_columns: dict[str, tuple[int, ...]] = {}

    def _columns(self, text: str) -> list[int]:
        get, (low, high) = self.vocabulary.get, self.ngram_range
        if self.analyzer == "word":
            return [i for i in map(get, word_ngrams(text, low, high)) if i is not None]
        columns: list[int] = []
        cache = self._word_columns
        for word in text.lower().split():
            found = cache.get(word)
            if found is None:
                found = tuple(i for i in map(get, _word_char_ngrams(word, low, high)) if i is not None)
                if len(cache) >= WORD_CACHE:
                    cache.clear()
                cache[word] = found
            columns.extend(found)
        return columns

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Python only makes the n-grams and looks them up; counting and weighting are array work."""
        columns: list[int] = []
        indptr = [0]
        for text in texts:
            columns.extend(self._columns(text))
            indptr.append(len(columns))
        shape = (len(texts), len(self.terms))
        counts = sp.csr_matrix(
            (
                np.ones(len(columns), dtype=np.float32),
                np.asarray(columns, dtype=np.int32),
                np.asarray(indptr),
            ),
            shape=shape,
        )
        counts.sum_duplicates()  # one entry per (text, term), holding its count; indices sorted
        weights = (np.log(counts.data) + 1.0) * self.idf[counts.indices]
        rows = np.repeat(np.arange(shape[0]), np.diff(counts.indptr))
        norms = np.sqrt(np.bincount(rows, weights=weights * weights, minlength=shape[0]))
        weights /= norms[rows]
        return sp.csr_matrix((weights.astype(np.float32), counts.indices, counts.indptr), shape=shape)


@dataclass
class LinearClassifier:
    """The mean of the probabilities of one or more logistic models over the same features.

    `weights` is (members, outputs, features); one output is a binary model (sigmoid), several a
    multinomial one (softmax). The NB-logistic ensemble used for complaints is two members, the
    naive-Bayes scaling folded into the second one's weights.
    """

    weights: np.ndarray
    intercepts: np.ndarray  # (members, outputs)

    def predict_proba(self, features: sp.csr_matrix) -> np.ndarray:
        total: np.ndarray | None = None
        for weights, intercept in zip(self.weights, self.intercepts, strict=True):
            scores = np.asarray(features @ weights.T, dtype=np.float64) + intercept
            if scores.shape[1] == 1:
                positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
                probabilities = np.column_stack([1.0 - positive, positive])
            else:
                scores -= scores.max(axis=1, keepdims=True)
                probabilities = np.exp(scores)
                probabilities /= probabilities.sum(axis=1, keepdims=True)
            total = probabilities if total is None else total + probabilities
        assert total is not None
        return total / len(self.weights)

    def __post_init__(self) -> None:
        # Per-feature push towards the last class, averaged over members: for explanations.
        self.evidence_weights = np.asarray(self.weights[:, -1, :].mean(axis=0))


@dataclass
class LanguageModel:
    lang: str
    words: TfidfFeatures
    chars: TfidfFeatures
    sentiment: LinearClassifier
    complaint: LinearClassifier | None = None
    churn: LinearClassifier | None = None
    complaint_embedding: LinearClassifier | None = None

    def features(self, texts: Sequence[str], *, prepared: bool = False) -> sp.csr_matrix:
        if not prepared:
            texts = [model_text(t) for t in texts]
        return sp.hstack(
            [
                self.words.transform(texts),
                self.chars.transform(texts),
                lexicon_features(texts, self.lang),
            ]
        ).tocsr()

    def top_words(
        self,
        features: sp.csr_matrix,
        row: int,
        classifier: LinearClassifier,
        stopwords: frozenset[str],
        k: int = 4,
    ) -> list[str]:
        """The word n-grams that pushed this text's score up most: the model's evidence."""
        names = self.words.terms
        start, end = features.indptr[row], features.indptr[row + 1]
        columns, values = features.indices[start:end], features.data[start:end]
        in_words = columns < len(names)
        columns, values = columns[in_words], values[in_words]
        contributions = values * classifier.evidence_weights[columns]
        words: list[str] = []
        for i in np.argsort(-contributions):
            if contributions[i] <= 0 or len(words) == k:
                break
            name = names[columns[i]]
            if not all(token in stopwords or len(token) < 3 for token in name.split()):
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
    # Words that carry weight in a model but explain nothing to a support agent.
    stopwords: frozenset[str] = frozenset()

    def uses_embeddings(self, lang: str | None = None, allowed: bool = True) -> bool:
        """Whether complaint scores (of `lang`, or of any language) include the sentence encoder."""
        models = [self.languages[lang]] if lang in self.languages else list(self.languages.values())
        return allowed and embeddings.available() and any(m.complaint_embedding is not None for m in models)

    def analyse(
        self, texts: Sequence[str], lang: str, explain_above: float = 0.5, *, use_embeddings: bool = True
    ) -> list[Scores | None]:
        """Scores for texts of one language (None for all when the language has no model).

        With `monitor[ml]` installed and a model trained with it, an uncertain complaint score
        (`embeddings.BAND`) is the mean of the n-gram and sentence-embedding classifiers' ones.
        """
        model = self.languages.get(lang)
        if model is None or not texts:
            return [None] * len(texts)
        prepared = [model_text(t) for t in texts]
        features = model.features(prepared, prepared=True)
        sentiment = model.sentiment.predict_proba(features)
        complaint = model.complaint.predict_proba(features)[:, 1] if model.complaint is not None else None
        if (
            complaint is not None
            and model.complaint_embedding is not None
            and self.uses_embeddings(lang, use_embeddings)
        ):
            head = model.complaint_embedding
            complaint = embeddings.blend(
                complaint,
                lambda rows: head.predict_proba(embeddings.embed([prepared[i] for i in rows]))[:, 1],
            )
        churn = model.churn.predict_proba(features)[:, 1] if model.churn is not None else None
        results: list[Scores | None] = []
        for row in range(len(texts)):
            negative, _neutral, positive = sentiment[row]
            score = float(complaint[row]) if complaint is not None else None
            words: tuple[str, ...] = ()
            if score is not None and score >= explain_above and model.complaint is not None:
                words = tuple(model.top_words(features, row, model.complaint, self.stopwords))
            churn_score = float(churn[row]) if churn is not None else None
            churn_words: tuple[str, ...] = ()
            if churn_score is not None and churn_score >= explain_above and model.churn is not None:
                churn_words = tuple(model.top_words(features, row, model.churn, self.stopwords))
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
        """Plain arrays only (no pickle): vocabularies as newline-joined UTF-8, weights as float32."""
        arrays: dict[str, np.ndarray] = {
            "header": _text_array(
                json.dumps(
                    {
                        "format_version": FORMAT_VERSION,
                        "metadata": self.metadata,
                        "stopwords": sorted(self.stopwords),
                        "languages": {
                            lang: {
                                "words": [m.words.analyzer, list(m.words.ngram_range)],
                                "chars": [m.chars.analyzer, list(m.chars.ngram_range)],
                                "classifiers": [n for n in _CLASSIFIERS if getattr(m, n) is not None],
                            }
                            for lang, m in self.languages.items()
                        },
                    }
                )
            )
        }
        for lang, model in self.languages.items():
            for name in ("words", "chars"):
                features: TfidfFeatures = getattr(model, name)
                if any("\n" in term for term in features.terms):
                    raise ValueError(f"{lang}/{name}: a vocabulary term contains a newline")
                arrays[f"{lang}.{name}.terms"] = _text_array("\n".join(features.terms))
                arrays[f"{lang}.{name}.idf"] = features.idf.astype(np.float32)
            for name in _CLASSIFIERS:
                classifier: LinearClassifier | None = getattr(model, name)
                if classifier is not None:
                    arrays[f"{lang}.{name}.weights"] = classifier.weights.astype(np.float32)
                    arrays[f"{lang}.{name}.intercepts"] = classifier.intercepts.astype(np.float64)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            np.savez_compressed(out, **arrays)  # type: ignore[arg-type]


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _text(array: np.ndarray) -> str:
    return array.tobytes().decode("utf-8")


def bundled_model_path() -> Path:
    return Path(str(resources.files("monitor.data").joinpath("models", MODEL_FILE)))


@cache
def load_model(path: str | None = None) -> DetectionModel:
    """The shipped model (or one at `path`), loaded once per process."""
    target = Path(path) if path else bundled_model_path()
    rebuild = "rebuild it with `monitor model train`"
    try:
        with np.load(target, allow_pickle=False) as data:
            header = json.loads(_text(data["header"]))
            if header.get("format_version") != FORMAT_VERSION:
                raise MonitorError(f"{target} is a detection model of another version; {rebuild}")
            languages = {}
            for lang, spec in header["languages"].items():
                vectorisers = {
                    name: TfidfFeatures(
                        spec[name][0],
                        (int(spec[name][1][0]), int(spec[name][1][1])),
                        _text(data[f"{lang}.{name}.terms"]).split("\n"),
                        data[f"{lang}.{name}.idf"],
                    )
                    for name in ("words", "chars")
                }
                classifiers = {
                    name: LinearClassifier(data[f"{lang}.{name}.weights"], data[f"{lang}.{name}.intercepts"])
                    for name in spec["classifiers"]
                }
                languages[lang] = LanguageModel(
                    lang, vectorisers["words"], vectorisers["chars"], **classifiers
                )
    except FileNotFoundError:
        raise MonitorError(f"detection model not found at {target}; {rebuild}") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        raise MonitorError(
            f"{target} is not a detection model ({type(exc).__name__}: {exc}); {rebuild}"
        ) from None
    return DetectionModel(languages, header.get("metadata") or {}, frozenset(header.get("stopwords") or ()))


def trainer() -> ModuleType:
    """`monitor.analysis.training`, which needs scikit-learn; running the model does not."""
    try:
        return importlib.import_module("monitor.analysis.training")
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("sklearn"):
            raise
        raise MonitorError(
            "training the model needs scikit-learn, which is not installed: pip install 'monitor[train]'"
        ) from None
