"""Detection in French and English: language, sentiment, complaint, churn, with evidence."""

from __future__ import annotations

import pytest

from monitor.analysis.churn import ChurnDetector
from monitor.analysis.enrich import Analyzer
from monitor.analysis.text import html_to_text, model_text
from monitor.config import settings_from_dict
from monitor.mention import Mention
from monitor.rules.engine import RuleSet

from feeds import seed_post

BRANDS = ["Bouygues Telecom", "Free", "Freebox", "@free"]


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(("fr", "en"), brand_terms=BRANDS)


def analysed(analyzer: Analyzer, text: str, lang: str | None = None, title: str | None = None) -> Mention:
    mention = Mention(source="t", external_id="1", text=text, lang=lang, title=title)
    analyzer([mention])
    return mention


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Bouygues Telecom still no signal, this is unacceptable", "en"),  # the brand name reads French
        ("Free en panne depuis ce matin", "fr"),  # and "Free" reads English
        ("Je n'ai plus internet depuis trois jours", "fr"),
        ("My order never arrived and nobody answers", "en"),
    ],
)
def test_language_is_detected_without_being_fooled_by_brand_names(
    analyzer: Analyzer, text: str, lang: str
) -> None:
    assert analysed(analyzer, text).lang == lang


def test_the_sources_language_wins(analyzer: Analyzer) -> None:
    assert analysed(analyzer, "Free en panne depuis ce matin", lang="en").lang == "en"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Free en panne depuis 3 jours, toujours pas de réseau, service client injoignable", "complaint"),
        ("@free ça fait une semaine que ma box est bloquée à l'étape 2, c'est une honte", "complaint"),
        ("My internet has been down for 3 days and support keeps hanging up on me", "complaint"),
        ("@FC_Help my order arrived damaged and I still haven't got a refund", "complaint"),
        ("Nouvelle offre : la Freebox Pop passe à 29,99 € par mois dès lundi", "not"),
        ("Happy birthday to my best friend, what a great day at the beach", "not"),
    ],
)
def test_complaint_score(analyzer: Analyzer, text: str, expected: str) -> None:
    mention = analysed(analyzer, text)
    assert mention.complaint_score is not None
    if expected == "complaint":
        assert mention.complaint_score >= 0.5, mention.complaint_score
        assert mention.evidence["complaint"], "a complaint comes with the words that made it one"
    else:
        assert mention.complaint_score < 0.5, mention.complaint_score


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("Service client nul, je suis très déçu 😡", -1),
        ("Merci beaucoup, super service, je suis ravi !", 1),
        ("Worst customer service ever, I'm furious", -1),
        ("Thank you so much, great service, love it!", 1),
    ],
)
def test_sentiment_sign_in_both_languages(analyzer: Analyzer, text: str, sign: int) -> None:
    mention = analysed(analyzer, text)
    assert mention.sentiment is not None and -1 <= mention.sentiment <= 1
    assert mention.sentiment * sign > 0.2, mention.sentiment


@pytest.mark.parametrize(
    ("text", "churn", "phrase"),
    [
        ("Je vais résilier mon abonnement Free, ras le bol", True, "Je vais résilier"),
        ("je ne vais pas résilier, ça va mieux", False, None),
        ("je ne résilie pas, c'est réglé", False, None),
        ("n'allez jamais chez free, 10 jours sans internet", True, "n'allez jamais chez"),
        ("je vais pas rester longtemps chez vous...", True, "vais pas rester longtemps chez"),
        ("j'ai demandé mon code RIO", True, "code RIO"),
        ("pluuuus jamais free", True, "plus jamais free"),
        ("I'm going to cancel my contract tomorrow", True, "going to cancel my"),
        ("I'm not going to cancel my contract", False, None),
        ("Switching to Verizon after this outage", True, "Switching to"),
        ("you just lost a customer", True, "you just lost a customer"),
        ("comment résilier l'option Canal+ ?", False, None),
        ("Merci pour votre aide rapide", False, None),
    ],
)
def test_churn_is_negation_aware_and_explained(text: str, churn: bool, phrase: str | None) -> None:
    signal = ChurnDetector().detect(text)
    assert signal.churn is churn
    if phrase:
        assert phrase in signal.evidence


def test_urls_handles_emoji_and_escapes_are_normalised_for_the_models() -> None:
    text = "@free https://t.co/abc123 c\\u2019est nul 😡 www.example.com"
    assert model_text(text) == "@USER URL c’est nul 😡 URL"


@pytest.mark.parametrize("text", ["", "   ", "😡😡😡", "\u200b\u200b", "\x00\x07 bell", "a" * 5000])
def test_degenerate_texts_get_scores_or_none_without_failing(analyzer: Analyzer, text: str) -> None:
    mention = analysed(analyzer, text)
    assert mention.churn is False
    if mention.complaint_score is not None:
        assert 0 <= mention.complaint_score <= 1


def test_huge_text_is_bounded(analyzer: Analyzer) -> None:
    """The models read the opening of a ~2 MB post (pytest-timeout guards against a hang)."""
    text = "Free en panne depuis trois jours. " * 60_000
    mention = analysed(analyzer, text)
    assert mention.complaint_score is not None and mention.complaint_score >= 0.5
    assert len(model_text(text)) <= 2000


def test_the_seed_story(analyzer: Analyzer) -> None:
    """The happy follow-up post is not a complaint; the refusal that threatens to leave is flagged."""
    settings = settings_from_dict({"brands": [{"name": "Bouygues Telecom", "aliases": ["Bouygues Télécom"]}]})
    rules = RuleSet.from_settings(settings)
    title, body = seed_post()
    happy = analysed(analyzer, html_to_text(body), title=title)
    happy.brand = "Bouygues Telecom"
    assert happy.lang == "fr"
    assert [d.rule for d in rules.evaluate(happy)] == []
    refusal = analysed(
        analyzer,
        "Mon engagement chez Bouygues Télécom arrive à son terme. L'opérateur m'appelle pour me proposer de "
        "prolonger mon contrat de 24 mois en échange de 15 petits SMS mensuels. Après des années de fidélité, "
        "c'est inadmissible. Je refuse bien entendu, et s'il le faut je vais résilier et changer d'opérateur.",
        title="Bouygues Télécom : 24 mois de réengagement pour 15 SMS ? Non merci !",
    )
    refusal.brand = "Bouygues Telecom"
    drafts = {d.rule: d for d in rules.evaluate(refusal)}
    assert "churn-threat" in drafts
    assert any("je vais résilier" in m for m in drafts["churn-threat"].explanation["matched"])


@pytest.mark.parametrize("mode", ["light", "accurate"])
def test_both_detection_modes_tell_french_from_english(mode: str) -> None:
    settings = settings_from_dict(
        {"database": "sqlite://", "brands": [{"name": "Free"}], "language_detection": mode}
    )
    analyzer = Analyzer.for_settings(settings)
    texts = [
        "Free: panne fibre, aucune réponse",
        "Free: my fiber is down again, no answer",
        # Links and @handles are no language: the few words around them decide.
        "@FreeMobile_Assistance https://t.co/Zx3g1J2wC8 réseau coupé",
        "@comcastcares https://www.example.fr/le-forfait?de=la Still waiting, technician never came",
    ]
    assert analyzer.languages_of(texts) == ["fr", "en", "fr", "en"]
