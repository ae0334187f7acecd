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
from functools import cache, lru_cache
from importlib import resources
from itertools import pairwise, repeat
from operator import is_not
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


def lexicon_scores(texts: Sequence[str], lang: str) -> np.ndarray:
    """The lexicon feature columns, weighted: (texts, LEXICON_COLUMNS) float32."""
    rows = [lexicon.scores(text, lang) for text in texts]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), LEXICON_COLUMNS) * LEXICON_WEIGHT


def lexicon_features(texts: Sequence[str], lang: str) -> sp.csr_matrix:
    return sp.csr_matrix(lexicon_scores(texts, lang))


def word_ngrams(text: str, low: int, high: int) -> list[str]:
    """Lower-cased word n-grams, exactly as scikit-learn's `analyzer="word"` makes them."""
    tokens = _TOKEN.findall(text.lower())
    grams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        if n == 2:
            grams.extend([f"{a} {b}" for a, b in pairwise(tokens)])
        else:
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


@dataclass(eq=False)  # compared (and hashed) by identity: it holds arrays
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
        self.offset = 0  # where this block's columns start in the model's feature matrix
        # Character n-grams never cross words, and words repeat: their columns are kept per word.
        self._word_columns: dict[str, np.ndarray] = {}

    def pieces(self, lowered: str) -> list[list[int]] | list[np.ndarray]:
        """Feature columns (with `offset`) of the n-grams of an already lower-cased text, in
        pieces (one list for word n-grams; one remembered array per word for character ones);
        -1 stands for an n-gram out of the vocabulary (dropped later with one array test).
        """
        get, (low, high), offset = self.vocabulary.get, self.ngram_range, self.offset
        if self.analyzer == "word":
            found = list(map(get, word_ngrams(lowered, low, high), repeat(-1)))
            return [[i + offset if i >= 0 else i for i in found] if offset else found]
        cache = self._word_columns
        words = lowered.split()
        per_word = list(map(cache.get, words))
        if not all(map(is_not, per_word, repeat(None))):
            for k, word in enumerate(words):
                if per_word[k] is None:
                    grams = _word_char_ngrams(word, low, high)
                    known = np.array([i + offset for i in map(get, grams) if i is not None], dtype=np.int32)
                    if len(cache) >= WORD_CACHE:
                        cache.clear()
                    per_word[k] = cache[word] = known
        return per_word  # type: ignore[return-value]


def tfidf_matrix(
    features: Sequence[TfidfFeatures], lowered: Sequence[str], extra: np.ndarray | None = None
) -> sp.csr_matrix:
    """One CSR matrix for several tf-idf blocks side by side (then `extra` dense columns).

    Python only makes the n-grams and looks their columns up; counting, weighting and the
    per-block unit length are array work over the whole batch at once.
    """
    width = sum(len(f.terms) for f in features)
    pieces: list[list[int] | np.ndarray] = []
    per_text: list[int] = []
    for text in lowered:
        before = len(pieces)
        for block in features:
            pieces.extend(block.pieces(text))
        per_text.append(len(pieces) - before)
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    rows = np.repeat(np.repeat(np.arange(len(lowered), dtype=np.int64), per_text), lengths)
    found = np.concatenate(pieces).astype(np.int64, copy=False) if pieces else np.zeros(0, np.int64)
    known = found >= 0
    total = width + (extra.shape[1] if extra is not None else 0)
    # (row, column) keys, sorted and counted. The keys arrive row by row, so a stable sort
    # (timsort, which merges runs) beats np.unique's; int32 when they fit halves the work.
    kind = np.int32 if len(lowered) * total < 2**31 else np.int64
    keys = np.sort((rows[known] * total + found[known]).astype(kind), kind="stable")
    runs = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[runs, len(keys)])
    keys = keys[runs].astype(np.int64)
    rows = keys // total
    cols = keys - rows * total
    weights = (np.log(counts.astype(np.float32)) + np.float32(1.0)) * _joined_idf(tuple(features))[cols]
    # Each block is scaled to unit length on its own, as each vectoriser does.
    starts = np.asarray([f.offset for f in features[1:]], dtype=np.int64)
    part = rows * len(features) + np.searchsorted(starts, cols, side="right")
    norms = np.sqrt(np.bincount(part, weights=weights * weights, minlength=len(lowered) * len(features)))
    weights /= norms[part].astype(np.float32)
    indptr = np.zeros(len(lowered) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(lowered)), out=indptr[1:])
    if extra is not None and extra.size:
        # The extra columns come last: each goes at the end of its row, no sort needed.
        extra_rows, extra_cols = np.nonzero(extra)
        at = indptr[extra_rows + 1]
        cols = np.insert(cols, at, width + extra_cols)
        weights = np.insert(weights, at, extra[extra_rows, extra_cols].astype(np.float32))
        indptr[1:] += np.cumsum(np.bincount(extra_rows, minlength=len(lowered)))
    return sp.csr_matrix(
        (weights.astype(np.float32, copy=False), cols.astype(np.int32), indptr), shape=(len(lowered), total)
    )


@lru_cache(maxsize=8)
def _joined_idf(features: tuple[TfidfFeatures, ...]) -> np.ndarray:
    return np.concatenate([f.idf for f in features]).astype(np.float32, copy=False)


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
    _explaining: tuple[frozenset[str], np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.chars.offset = len(self.words.terms)

    def features(self, texts: Sequence[str], *, prepared: bool = False) -> sp.csr_matrix:
        """Word n-grams, character n-grams, then the lexicon scores: one matrix, one pass."""
        if not prepared:
            texts = [model_text(t) for t in texts]
        return tfidf_matrix(
            [self.words, self.chars], [t.lower() for t in texts], lexicon_scores(texts, self.lang)
        )

    def top_words(
        self,
        features: sp.csr_matrix,
        rows: Sequence[int],
        classifier: LinearClassifier,
        stopwords: frozenset[str],
        k: int = 4,
    ) -> dict[int, list[str]]:
        """Per row, the word n-grams that pushed its score up most: the model's evidence.

        The contributions of all the chosen rows are ranked with a few array operations; Python
        only walks the positive ones, strongest first.
        """
        if not rows:
            return {}
        names = self.words.terms
        chosen = np.asarray(rows, dtype=np.int64)
        starts, lengths = features.indptr[chosen], np.diff(features.indptr)[chosen]
        # Positions of the chosen rows' entries, and which chosen row each belongs to.
        positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        owner = np.repeat(np.arange(len(rows)), lengths)
        columns = features.indices[positions]
        words = columns < len(names)
        columns, owner = columns[words], owner[words]
        pushes = features.data[positions[words]] * classifier.evidence_weights[columns]
        shown = (pushes > 0) & self._explains(stopwords)[columns]
        columns, owner, pushes = columns[shown], owner[shown], pushes[shown]
        order = np.lexsort((-pushes, owner))  # by row, strongest push first
        owner, columns = owner[order], columns[order]
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # where each row's run starts
        rank = np.arange(len(owner)) - np.repeat(first, np.diff(np.r_[first, len(owner)]))
        found: dict[int, list[str]] = {row: [] for row in rows}
        for index, column in zip(owner[rank < k].tolist(), columns[rank < k].tolist(), strict=True):
            found[rows[index]].append(names[column])
        return found

    def _explains(self, stopwords: frozenset[str]) -> np.ndarray:
        """Per word column: whether it can explain a score (not only stopwords and short tokens)."""
        if self._explaining is None or self._explaining[0] is not stopwords:
            mask = np.array(
                [not all(t in stopwords or len(t) < 3 for t in name.split()) for name in self.words.terms],
                dtype=bool,
            )
            self._explaining = (stopwords, mask)
        return self._explaining[1]


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
        complaint_words = (
            model.top_words(
                features, np.flatnonzero(complaint >= explain_above).tolist(), model.complaint, self.stopwords
            )
            if complaint is not None and model.complaint is not None
            else {}
        )
        churn_words = (
            model.top_words(
                features, np.flatnonzero(churn >= explain_above).tolist(), model.churn, self.stopwords
            )
            if churn is not None and model.churn is not None
            else {}
        )
        balance = [round(x, 4) for x in (sentiment[:, 2] - sentiment[:, 0]).tolist()]
        labels = sentiment.argmax(axis=1).tolist()
        absent: list[float | None] = [None] * len(texts)
        complaints = [round(x, 4) for x in complaint.tolist()] if complaint is not None else absent
        churns = [round(x, 4) for x in churn.tolist()] if churn is not None else absent
        return [
            Scores(
                sentiment=balance[row],
                sentiment_label=SENTIMENTS[labels[row]],
                complaint=complaints[row],
                complaint_words=tuple(complaint_words.get(row, ())),
                churn=churns[row],
                churn_words=tuple(churn_words.get(row, ())),
            )
            for row in range(len(texts))
        ]

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
