"""The enrichment step of the ingest path: language, sentiment, complaint and churn, with evidence.

Works on batches (one vectorising pass per language per batch), which is what makes it fast.
A mention keeps the language its source gave (an API's `lang`); otherwise it is detected among
the configured languages. Languages without a model get no scores.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

from monitor.analysis import lexicon
from monitor.analysis.churn import ChurnDetector
from monitor.analysis.model import DetectionModel, load_model
from monitor.mention import Mention

if TYPE_CHECKING:
    from monitor.config import Settings

# Words frequent in one language and (nearly) absent from the other.
FUNCTION_WORDS = {
    "fr": frozenset(
        "le la les des du une est et je tu il nous vous ils pas mais pour avec sur dans ce cette que qui "
        "mon ma mes ton ta vos votre chez depuis toujours rien plus suis sont ont avez fait être très".split()
    ),
    "en": frozenset(
        "the and is are was were you your my we they this that with for from have has not but what "
        "just been will would can't don't it's i'm of to at be by".split()
    ),
}
_WORD = re.compile(r"[a-zàâçéèêëîïôûùüÿœ']+")
_FRENCH_LETTERS = re.compile(r"[àâçéèêîôûùœ]", re.IGNORECASE)
_NOT_LANGUAGE = re.compile(r"https?://\S+|\bwww\.\S+|(?<!\w)@\w+")
_LETTER = re.compile(r"[^\W\d_]")
ANALYSED_CHARS = 5000
FUNCTION_WORDS_NEEDED = 2
PARALLEL_DETECTION = 64  # below this many texts, detect one by one
CHURN_MODEL_THRESHOLD = 0.8  # the churn classifier only adds posts it is quite sure of
CHURN_MODEL_MAX_CHARS = 400  # ... and only tweet-sized ones: it learned from tweets, not blog posts


@cache
def _detector(languages: tuple[str, ...], light: bool = False) -> LanguageDetector | None:
    wanted = []
    for code in languages:
        try:
            wanted.append(Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())))
        except (AttributeError, ValueError):
            continue
    if len(wanted) < 2:
        return None
    builder = LanguageDetectorBuilder.from_languages(*wanted)
    # Light: trigram models only, ~10 MB instead of ~95 MB for French and English, a little less
    # accurate on very short posts (measured in docs/performance.md).
    return (builder.with_low_accuracy_mode() if light else builder).build()


def _words_only(text: str) -> str:
    if "@" not in text and "http" not in text and "www." not in text:
        return text
    words = _NOT_LANGUAGE.sub(" ", text)
    return words if _LETTER.search(words) else text


class Analyzer:
    """Callable enricher: `analyzer(mentions) -> mentions`, scores filled in place."""

    def __init__(
        self,
        languages: Sequence[str] = ("fr", "en"),
        model: DetectionModel | None = None,
        brand_terms: Sequence[str] = (),
        light: bool = False,
        embeddings: bool = True,
    ) -> None:
        self.languages = tuple(code.lower() for code in languages)
        self.model = model or load_model()
        self.churn = ChurnDetector()
        lexicon.load()  # ~1 s of word lists: paid at start-up, not by the first poll's posts
        self.detector = _detector(self.languages, light)
        if self.detector is not None:  # lingua loads its models on first use: ~0.3 s of CPU
            self.detector.detect_language_of("load the language models now")
        self.embeddings = embeddings  # use the sentence encoder when monitor[ml] is installed
        # Brand names are proper nouns of no language ("Bouygues Telecom" reads as French,
        # "Free" as English): language detection does not see them.
        terms = sorted({t.lstrip("@#") for t in brand_terms if t.strip("@# ")}, key=len, reverse=True)
        self._brand_terms = (
            re.compile(r"[@#]?\b(?:" + "|".join(map(re.escape, terms)) + r")\b", re.IGNORECASE)
            if terms
            else None
        )

    @classmethod
    def for_settings(cls, settings: Settings) -> Analyzer:
        """The analyzer a config asks for: its languages, detection mode and brand names."""
        terms = [t for b in settings.brands for t in (b.name, *b.aliases, *b.handles)]
        return cls(
            settings.languages,
            brand_terms=terms,
            light=settings.language_detection == "light",
            embeddings=settings.embeddings,
        )

    def languages_of(self, texts: list[str]) -> list[str]:
        """Detected language per text, among the configured ones ("other" when unsure)."""
        if not texts:
            return []
        if self.detector is None:
            return [self.languages[0] if self.languages else "other"] * len(texts)
        # Links, @handles and brand names are of no language: detection reads the words around
        # them (when there are any).
        texts = [_words_only(text) for text in texts]
        if self._brand_terms is not None:
            texts = [self._brand_terms.sub(" ", text) for text in texts]
        decided = [self._by_function_words(text) for text in texts]
        undecided = [i for i, lang in enumerate(decided) if lang is None]
        if len(undecided) < PARALLEL_DETECTION:  # starting lingua's threads costs ~10 ms
            found = [self.detector.detect_language_of(texts[i]) for i in undecided]
        else:
            found = self.detector.detect_languages_in_parallel_of([texts[i] for i in undecided])
        for i, language in zip(undecided, found, strict=True):
            decided[i] = language.iso_code_639_1.name.lower() if language is not None else "other"
        return [lang or "other" for lang in decided]

    def _by_function_words(self, text: str) -> str | None:
        """French or English from their commonest words, when the text is unambiguous.

        Most posts carry several of these; lingua (slower) decides the rest.
        """
        if not FUNCTION_WORDS.keys() >= set(self.languages):
            return None
        words = _WORD.findall(text.lower())
        french = sum(map(FUNCTION_WORDS["fr"].__contains__, words))
        english = sum(map(FUNCTION_WORDS["en"].__contains__, words))
        # Two such words and none of the other language: 82 % of French and English tweets are
        # decided here, with 6 errors in 12,000 (lingua alone: 63); see docs/performance.md.
        if min(french, english) == 0 and max(french, english) >= FUNCTION_WORDS_NEEDED:
            return "fr" if french else "en"
        if not english and _FRENCH_LETTERS.search(text):  # 533 such tweets undecided above: all French
            return "fr"
        return None

    def __call__(self, mentions: list[Mention]) -> list[Mention]:
        # A post is judged on its opening: a 2 MB page must cost what a long post does.
        texts = {id(m): (f"{m.title}\n{m.text}" if m.title else m.text)[:ANALYSED_CHARS] for m in mentions}
        unknown = [m for m in mentions if not m.lang and texts[id(m)].strip()]
        for mention, lang in zip(unknown, self.languages_of([texts[id(m)] for m in unknown]), strict=True):
            mention.lang = lang
        by_language: dict[str, list[Mention]] = defaultdict(list)
        for mention in mentions:
            by_language[mention.lang or "other"].append(mention)
        for lang, group in by_language.items():
            scores = self.model.analyse([texts[id(m)] for m in group], lang, use_embeddings=self.embeddings)
            for mention, score in zip(group, scores, strict=True):
                evidence = list(self.churn.detect(texts[id(mention)]).evidence)
                if score is not None:
                    mention.sentiment = score.sentiment
                    mention.complaint_score = score.complaint
                    mention.evidence["sentiment"] = [score.sentiment_label]
                    if score.complaint_words:
                        mention.evidence["complaint"] = list(score.complaint_words)
                    if (
                        not evidence
                        and score.churn is not None
                        and score.churn >= CHURN_MODEL_THRESHOLD
                        and len(texts[id(mention)]) <= CHURN_MODEL_MAX_CHARS
                    ):
                        evidence = [
                            f"model: {', '.join(score.churn_words)}" if score.churn_words else "model"
                        ]
                mention.churn = bool(evidence)
                if evidence:
                    mention.evidence["churn"] = evidence
        return mentions
