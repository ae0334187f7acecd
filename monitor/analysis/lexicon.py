"""Polarity lexicons: cheap, explainable sentiment features for the models.

English uses VADER (its lexicon, negation, intensifiers and emoji handling). French uses the
vaderSentiment_fr word list (shipped in `monitor/data/lexicons/`, MIT) with a simple negation
window, plus VADER's emoji valences, since emoji carry the same mood in both languages.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from monitor.analysis.text import fold
from monitor.analysis.vader import Vader

_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|[\U0001F300-\U0001FAFF\u2600-\u27BF]", re.UNICODE)
_FR_NEGATIONS = frozenset({"ne", "n", "pas", "jamais", "rien", "aucun", "aucune", "sans", "ni", "personne"})
NEGATION_WINDOW = 3
# Emoji whose VADER description scores neutral ("pouting face") but that customers use in anger.
_EMOJI_VALENCE = {
    "😡": -2.5,
    "🤬": -3.0,
    "😤": -2.0,
    "👎": -2.0,
    "😠": -2.0,
    "🙄": -1.5,
    "😒": -1.5,
    "💩": -2.0,
}
# Intensifiers the translated word list scores as if they were opinions.
_NOT_OPINIONS = frozenset({"vraiment", "tres", "trop", "tellement", "assez", "plutot"})


@cache
def _vader() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


@cache
def _french_valences() -> dict[str, float]:
    text = resources.files("monitor.data").joinpath("lexicons/fr_valence.tsv").read_text(encoding="utf-8")
    valences: dict[str, float] = {}
    for line in text.splitlines():
        word, _, value = line.partition("\t")
        if word and value:
            valences[fold(word)] = float(value)
    analyzer = _vader()
    for emoji, description in analyzer.emojis.items():
        score = analyzer.polarity_scores(description)["compound"] * 3
        if score:
            valences[emoji] = score
    valences.update(_EMOJI_VALENCE)
    for word in _NOT_OPINIONS:
        valences.pop(word, None)
    return valences


def load() -> None:
    """Build both lexicons now (the French one scores VADER's emoji descriptions: about a second)."""
    _fast_vader()
    _french_valences()


@cache
def _fast_vader() -> Vader:
    return Vader(_vader())


def english(text: str) -> tuple[float, float, float]:
    """(positive, negative, compound) from VADER (its faster port, same scores)."""
    scores = _fast_vader().polarity_scores(text)
    return scores["pos"], scores["neg"], scores["compound"]


def french(text: str) -> tuple[float, float, float]:
    """(positive, negative, balance) from the French word list, with negation flipping valence."""
    valences = _french_valences()
    folded = fold(text)
    tokens = _TOKEN.findall(folded)
    if "n'" not in folded and _FR_NEGATIONS.isdisjoint(tokens):  # most posts: a plain sum
        values = [v for v in map(valences.get, tokens) if v is not None]
        positive = sum(v for v in values if v > 0)
        negative = -sum(v for v in values if v < 0)
        return positive / 4, negative / 4, (positive - negative) / 4
    positive = negative = 0.0
    negated = 0
    for token, value in zip(tokens, map(valences.get, tokens), strict=True):
        if token in _FR_NEGATIONS or token.startswith("n'"):  # "ne", "pas", "n'est", ...
            negated = NEGATION_WINDOW
            continue
        if value is not None:
            if negated:
                value = -0.74 * value
            if value > 0:
                positive += value
            else:
                negative -= value
        if negated:
            negated -= 1
    return positive / 4, negative / 4, (positive - negative) / 4


def scores(text: str, lang: str) -> tuple[float, float, float]:
    return french(text) if lang == "fr" else english(text)
