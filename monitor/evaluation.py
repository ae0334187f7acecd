"""`monitor eval`: how well the product flags what a support team should see, on labelled posts.

Each text runs through the same analysis and rules as a collected mention of the configured
brand. `--cv N` instead cross-validates the trainable model on the file itself, for comparison
with published results.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from monitor.analysis import embeddings
from monitor.analysis.enrich import Analyzer
from monitor.analysis.model import SENTIMENTS, load_model, sentiment_label, trainer
from monitor.config import Settings
from monitor.errors import ConfigError, MonitorError
from monitor.mention import Mention
from monitor.rules.engine import RuleSet

Target = Literal["flag", "complaint", "churn", "sentiment"]
TARGETS: tuple[str, ...] = ("flag", "complaint", "churn", "sentiment")
COMPLAINT_THRESHOLD = 0.5  # the built-in pack's complaint_score_at_least
BATCH = 256


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    lang: str | None


def read_examples(path: Path, target: str) -> list[Example]:
    """`text,label[,lang]` rows; label 0/1 (or negative/neutral/positive for sentiment)."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
                raise ConfigError("expected a CSV header with `text` and `label` columns", file=str(path))
            rows = list(reader)
    except OSError as exc:
        raise MonitorError(f"cannot read {path}: {exc}") from None
    examples = []
    for number, row in enumerate(rows, start=2):
        raw = (row.get("label") or "").strip()
        try:
            label = sentiment_label(raw) if target == "sentiment" else {"0": 0, "1": 1}[raw]
        except (KeyError, ValueError):
            expected = "negative/neutral/positive or 0/1/2" if target == "sentiment" else "0 or 1"
            raise ConfigError(f"line {number}: label {raw!r} is not {expected}", file=str(path)) from None
        examples.append(
            Example(row.get("text") or "", label, (row.get("lang") or "").strip().lower() or None)
        )
    if not examples:
        raise ConfigError("no labelled rows", file=str(path))
    return examples


def binary_scores(truth: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    pairs = Counter(zip(truth, predicted, strict=True))
    tp, fp, fn, tn = pairs[(1, 1)], pairs[(0, 1)], pairs[(1, 0)], pairs[(0, 0)]

    def f1(tp: int, fp: int, fn: int) -> float:
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    positive, negative = f1(tp, fp, fn), f1(tn, fn, fp)
    return {
        "n": len(truth),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(positive, 4),
        "macro_f1": round((positive + negative) / 2, 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def sentiment_scores(truth: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    f1s = []
    for label in range(len(SENTIMENTS)):
        pairs = Counter((t == label, p == label) for t, p in zip(truth, predicted, strict=True))
        tp, fp, fn = pairs[(True, True)], pairs[(False, True)], pairs[(True, False)]
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    accuracy = sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)
    return {"n": len(truth), "accuracy": round(accuracy, 4), "macro_f1": round(sum(f1s) / len(f1s), 4)}


def _mentions(examples: Sequence[Example], analyzer: Analyzer, brand: str) -> list[Mention]:
    mentions = [
        Mention(source="eval", external_id=str(i), text=e.text, lang=e.lang, brand=brand)
        for i, e in enumerate(examples)
    ]
    for start in range(0, len(mentions), BATCH):
        analyzer(mentions[start : start + BATCH])
    return mentions


def model_description(settings: Settings | None = None) -> str:
    """Which model scores: the light one alone, or with the sentence encoder (monitor[ml])."""
    model = load_model()
    trained = model.metadata.get("trained_at", "?")
    light = f"light model (tf-idf n-grams + lexicon, logistic regression), trained {trained}"
    if model.uses_embeddings(allowed=settings.embeddings if settings else True):
        return f"{light}, English complaints averaged with {embeddings.ENCODER} embeddings"
    if any(m.complaint_embedding is not None for m in model.languages.values()):
        reason = "embeddings: false" if settings and not settings.embeddings else "monitor[ml] not installed"
        return f"{light} (its embedding head is unused: {reason})"
    return light


def evaluate(
    settings: Settings,
    examples: Sequence[Example],
    *,
    target: str = "flag",
    brand: str | None = None,
    by_rule: bool = False,
) -> dict[str, Any]:
    """Score the configured analysis and rules (or one detector) against the labels."""
    brand = brand or settings.brands[0].name
    analyzer = Analyzer.for_settings(settings)
    mentions = _mentions(examples, analyzer, brand)
    truth = [e.label for e in examples]
    if target == "sentiment":
        labels = [SENTIMENTS.index((m.evidence.get("sentiment") or ["neutral"])[0]) for m in mentions]
        return sentiment_scores(truth, labels)
    if target == "complaint":
        return binary_scores(truth, [int((m.complaint_score or 0) >= COMPLAINT_THRESHOLD) for m in mentions])
    if target == "churn":
        return binary_scores(truth, [int(bool(m.churn)) for m in mentions])
    rules = RuleSet.from_settings(settings)
    fired = [[d.rule for d in rules.evaluate(m)] for m in mentions]
    result = binary_scores(truth, [int(bool(f)) for f in fired])
    if by_rule:
        result["by_rule"] = {
            rule.rule.name: binary_scores(truth, [int(rule.rule.name in f) for f in fired])
            for rule in rules.rules
        }
    return result


def cross_validated(
    settings: Settings, examples: Sequence[Example], *, target: str = "flag", folds: int = 10
) -> dict[str, Any]:
    """k-fold scores of the trainable model, trained on the file itself, one model per language."""
    if folds < 2:
        raise ConfigError("--cv needs at least 2 folds")
    analyzer = Analyzer.for_settings(settings)
    langs = [
        e.lang or lang
        for e, lang in zip(examples, analyzer.languages_of([e.text for e in examples]), strict=True)
    ]
    truth = np.array([e.label for e in examples])
    # A language with too few examples to split (a few tweets detected as another language)
    # is cross-validated with the file's main language.
    main = Counter(langs).most_common(1)[0][0]
    for lang in set(langs) - {main}:
        per_label = Counter(truth[i] for i, code in enumerate(langs) if code == lang)
        if len(per_label) < 2 or min(per_label.values()) < folds:
            langs = [main if code == lang else code for code in langs]
    predicted = np.zeros(len(examples), dtype=int)
    task = "sentiment" if target == "sentiment" else "complaint"
    for lang in sorted(set(langs)):
        index = [i for i, code in enumerate(langs) if code == lang]
        labels = truth[index]
        smallest = min(Counter(labels.tolist()).values())
        if len(set(labels.tolist())) < 2 or smallest < folds:
            raise MonitorError(
                f"too few examples of each label in language {lang!r} for {folds}-fold cross-validation"
            )
        out = trainer().cross_validate(
            [examples[i].text for i in index], labels, lang, task, folds, use_embeddings=settings.embeddings
        )
        predicted[index] = (
            out.astype(int) if task == "sentiment" else (out >= COMPLAINT_THRESHOLD).astype(int)
        )
    if target == "sentiment":
        return sentiment_scores(truth.tolist(), predicted.tolist())
    if target in ("flag", "churn"):
        churn = [int(bool(m.churn)) for m in _mentions(examples, analyzer, settings.brands[0].name)]
        predicted = np.array(churn) if target == "churn" else np.maximum(predicted, churn)
    return binary_scores(truth.tolist(), predicted.tolist())
