"""The fast VADER port gives the library's own scores, quirks included, on real tweets."""

from __future__ import annotations

import csv

import pytest
from conftest import SHARED
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from monitor.analysis.vader import Vader

EDGE_CASES = [
    "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",  # caps, boosters, exclamations
    "Not bad at all",  # negation
    "At least it isn't a horrible book.",  # "least", n't
    "Today only kinda sux! But I'll get by, lol",  # "but" rule
    "good but good but bad, but fine",  # the library's "but" quirk (index of the first equal score)
    "Catch utf-8 emoji such as 💘 and 💋 and 😁",  # emoji described
    "😡😡 service😤",  # emoji next to words
    "no no good",  # "no" before a lexicon word
    "no, or nor good",
    "kind of good and kind",  # "kind of" is a dampener, "kind" alone a word
    "never so good; without doubt great",  # idiom checks
    "the shit is the bomb, bad ass",  # special cases
    "at least good, very least bad, least good",
    "WORST. SERVICE. EVER???? :( :) :D",  # all caps, question marks, emoticons
    "",
    "   ",
    "!!!",
    "x" * 5000,
]


def shared_tweets() -> list[str]:
    texts: list[str] = []
    for name in ("complaints-en/train.csv", "sentiment-umsab/en_train.csv", "sentiment-umsab/fr_train.csv"):
        with (SHARED / "data" / name).open(encoding="utf-8") as handle:
            texts.extend(row["text"] for row in csv.DictReader(handle))
    return texts


@pytest.fixture(scope="module")
def library() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def test_port_matches_the_library_on_edge_cases(library: SentimentIntensityAnalyzer) -> None:
    port = Vader(library)
    for text in EDGE_CASES:
        assert port.polarity_scores(text) == library.polarity_scores(text), text


def test_port_matches_the_library_on_real_tweets(library: SentimentIntensityAnalyzer) -> None:
    port = Vader(library)
    texts = shared_tweets()
    assert len(texts) > 5000
    different = [t for t in texts if port.polarity_scores(t) != library.polarity_scores(t)]
    assert different == []
