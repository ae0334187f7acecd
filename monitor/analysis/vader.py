"""VADER's `polarity_scores`, computed the same way with less work per word.

vaderSentiment 3.3.2 re-lowercases the whole post for every opinion word it meets (several
times: negation, idioms), and walks the post character by character looking for emoji. This
port lowercases once, finds emoji with one set test, and does the per-word work only for the words
in VADER's lexicon; it reads VADER's own lexicon and constants, and keeps its quirks (the "but"
rule, the "no" rule). A test holds it to the library's output on every French and English
tweet of the shared data sets; it is about 2.3x faster, and English sentiment features run it
on every post.
"""

from __future__ import annotations

import string

from vaderSentiment.vaderSentiment import (
    BOOSTER_DICT,
    C_INCR,
    N_SCALAR,
    NEGATE,
    SPECIAL_CASES,
    SentimentIntensityAnalyzer,
)

_NEGATE = frozenset(NEGATE)
_PUNCTUATION = string.punctuation


def _negated(word: str) -> bool:
    return word in _NEGATE or "n't" in word


class Vader:
    """`Vader(analyzer).polarity_scores(text)` == `analyzer.polarity_scores(text)`, faster."""

    def __init__(self, analyzer: SentimentIntensityAnalyzer | None = None) -> None:
        self.analyzer = analyzer or SentimentIntensityAnalyzer()
        self.lexicon: dict[str, float] = self.analyzer.lexicon
        self.emojis: dict[str, str] = self.analyzer.emojis
        # The library looks emoji up one character at a time: only one-character keys can match.
        self._emoji = frozenset(e for e in self.emojis if len(e) == 1)

    def _describe_emoji(self, text: str) -> str:
        """Emoji replaced by their descriptions, spaced exactly as the library does it."""
        parts: list[str] = []
        prev_space = True
        for char in text:
            description = self.emojis.get(char)
            if description is not None:
                if not prev_space:
                    parts.append(" ")
                parts.append(description)
                prev_space = False
            else:
                parts.append(char)
                prev_space = char == " "
        return "".join(parts)

    def polarity_scores(self, text: str) -> dict[str, float]:
        if not self._emoji.isdisjoint(text):
            text = self._describe_emoji(text)
        text = text.strip()
        # `_strip_punc_if_word`: trailing and leading punctuation off, unless that leaves <= 2
        # characters (an emoticon such as ":)" stays whole).
        words = [
            token if len(stripped := token.strip(_PUNCTUATION)) <= 2 else stripped for token in text.split()
        ]
        lower = [word.lower() for word in words]
        count = len(words)
        capitals = sum(map(str.isupper, words))
        is_cap_diff = 0 < count - capitals < count
        lexicon = self.lexicon
        sentiments: list[float] = [0] * count  # most words carry no valence
        for i in [i for i, low in enumerate(lower) if low in lexicon]:
            low = lower[i]
            if low in BOOSTER_DICT or (low == "kind" and i < count - 1 and lower[i + 1] == "of"):
                continue
            sentiments[i] = self._valence(words, lower, i, is_cap_diff)
        if "but" in lower:
            sentiments = SentimentIntensityAnalyzer._but_check(words, sentiments)
        return self.analyzer.score_valence(sentiments, text)

    def _valence(self, words: list[str], lower: list[str], i: int, is_cap_diff: bool) -> float:
        """`sentiment_valence` of the library for a lexicon word."""
        lexicon = self.lexicon
        low = lower[i]
        valence = lexicon[low]
        if low == "no" and i != len(words) - 1 and lower[i + 1] in lexicon:
            valence = 0.0
        if (
            (i > 0 and lower[i - 1] == "no")
            or (i > 1 and lower[i - 2] == "no")
            or (i > 2 and lower[i - 3] == "no" and lower[i - 1] in ("or", "nor"))
        ):
            valence = lexicon[low] * N_SCALAR
        if is_cap_diff and words[i].isupper():
            valence = valence + C_INCR if valence > 0 else valence - C_INCR
        for start_i in range(3):
            before = i - (start_i + 1)
            if i > start_i and lower[before] not in lexicon:
                s = self._scalar(words[before], lower[before], valence, is_cap_diff)
                if start_i == 1 and s != 0:
                    s = s * 0.95
                if start_i == 2 and s != 0:
                    s = s * 0.9
                valence = valence + s
                valence = _negation_check(valence, lower, start_i, i)
                if start_i == 2:
                    valence = _special_idioms_check(valence, lower, i)
        return _least_check(valence, lower, i, lexicon)

    @staticmethod
    def _scalar(word: str, low: str, valence: float, is_cap_diff: bool) -> float:
        """`scalar_inc_dec` of the library."""
        scalar = BOOSTER_DICT.get(low)
        if scalar is None:
            return 0.0
        if valence < 0:
            scalar *= -1
        if word.isupper() and is_cap_diff:
            scalar = scalar + C_INCR if valence > 0 else scalar - C_INCR
        return float(scalar)


def _negation_check(valence: float, lower: list[str], start_i: int, i: int) -> float:
    if start_i == 0:
        if _negated(lower[i - 1]):
            valence = valence * N_SCALAR
    elif start_i == 1:
        if lower[i - 2] == "never" and lower[i - 1] in ("so", "this"):
            valence = valence * 1.25
        elif lower[i - 2] == "without" and lower[i - 1] == "doubt":
            pass
        elif _negated(lower[i - 2]):
            valence = valence * N_SCALAR
    else:
        if (lower[i - 3] == "never" and lower[i - 2] in ("so", "this")) or lower[i - 1] in ("so", "this"):
            valence = valence * 1.25
        elif lower[i - 3] == "without" and (lower[i - 2] == "doubt" or lower[i - 1] == "doubt"):
            pass
        elif _negated(lower[i - 3]):
            valence = valence * N_SCALAR
    return valence


def _special_idioms_check(valence: float, lower: list[str], i: int) -> float:
    onezero = f"{lower[i - 1]} {lower[i]}"
    twoonezero = f"{lower[i - 2]} {lower[i - 1]} {lower[i]}"
    twoone = f"{lower[i - 2]} {lower[i - 1]}"
    threetwoone = f"{lower[i - 3]} {lower[i - 2]} {lower[i - 1]}"
    threetwo = f"{lower[i - 3]} {lower[i - 2]}"
    for sequence in (onezero, twoonezero, twoone, threetwoone, threetwo):
        if sequence in SPECIAL_CASES:
            valence = SPECIAL_CASES[sequence]
            break
    if len(lower) - 1 > i:
        zeroone = f"{lower[i]} {lower[i + 1]}"
        if zeroone in SPECIAL_CASES:
            valence = SPECIAL_CASES[zeroone]
    if len(lower) - 1 > i + 1:
        zeroonetwo = f"{lower[i]} {lower[i + 1]} {lower[i + 2]}"
        if zeroonetwo in SPECIAL_CASES:
            valence = SPECIAL_CASES[zeroonetwo]
    for n_gram in (threetwoone, threetwo, twoone):
        if n_gram in BOOSTER_DICT:
            valence = valence + BOOSTER_DICT[n_gram]
    return valence


def _least_check(valence: float, lower: list[str], i: int, lexicon: dict[str, float]) -> float:
    if i > 1 and lower[i - 1] not in lexicon and lower[i - 1] == "least":
        if lower[i - 2] != "at" and lower[i - 2] != "very":
            valence = valence * N_SCALAR
    elif i > 0 and lower[i - 1] not in lexicon and lower[i - 1] == "least":
        valence = valence * N_SCALAR
    return valence
