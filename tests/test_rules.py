"""The rules engine: every condition and its evidence, bad rules, brands/enabled, cooldown,
author_mentions_within on both databases, and `monitor rules check|test|backtest`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from monitor.analysis.text import fold
from monitor.cli import main
from monitor.config import Settings, load_config, settings_from_dict
from monitor.errors import ConfigError
from monitor.mention import Mention
from monitor.pipeline import Pipeline, pass_through
from monitor.rules.conditions import (
    _SEPARATORS,
    REGISTRY,
    KeywordIndex,
    _normalize,
    compile_condition,
    normalize_term,
)
from monitor.rules.context import DatabaseContext
from monitor.rules.engine import RuleSet
from monitor.storage.db import Database
from monitor.storage.tables import AggregateAlertRow, CaseEventRow, CaseRow, FlagRow, MentionRow, OutboxRow

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
BRAND = "Bouygues Telecom"
CHANNELS = {"ops": {"type": "slack", "webhook_url": "https://hooks.example/T/B/x", "min_severity": "low"}}


def mention(text: str = "", **fields: Any) -> Mention:
    base: dict[str, Any] = {"source": "blogs", "external_id": "1", "text": text, "brand": BRAND}
    base.update(fields)
    return Mention(**base)


def check(tree: Any, m: Mention, context: Any = None) -> list[str] | None:
    return compile_condition(tree, "rules[0].when").check(m, context)


class FakeContext:
    def __init__(self, count: int) -> None:
        self.count = count
        self.asked: list[timedelta] = []

    def author_mentions(self, mention: Mention, within: timedelta) -> int:
        self.asked.append(within)
        return self.count


# --- every condition: what matches, what does not, and the evidence a support agent reads ---


@pytest.mark.parametrize(
    ("tree", "text", "evidence"),
    [
        ({"words_any": ["résilier"]}, "Je vais RESILIER demain", ["words: RESILIER"]),
        ({"words_any": ["resilier"]}, "je vais résilier", ["words: résilier"]),
        ({"words_any": "panne"}, "Encore une Panne.", ["words: Panne"]),
        ({"words_any": ["je quitte"]}, "bon, je-quitte l'opérateur", ["words: je-quitte"]),
        ({"words_any": ["je quitte"]}, "alors je   quitte", ["words: je   quitte"]),
        ({"words_any": ["je quitte"]}, "😡 je\u00a0\u2009quitte", ["words: je\u00a0\u2009quitte"]),
        (
            {"words_any": ["changer d'opérateur"]},
            "Je veux changer d’opérateur",
            ["words: changer d’opérateur"],
        ),
        ({"words_any": ["panne", "fibre"]}, "fibre en panne", ["words: fibre, panne"]),
        ({"words_any": ["je quitte", "quitte"]}, "je quitte", ["words: je quitte"]),  # no nested repeat
        ({"words_all": ["panne", "fibre"]}, "La fibre: panne totale", ["words: fibre, panne"]),
        ({"phrase": "coupure de réseau"}, "Une COUPURE DE RESEAU ce matin", ["phrase: COUPURE DE RESEAU"]),
        (
            {"phrase": {"text": "coupure de réseau", "plurals": True}},
            "des coupures de réseaux partout",
            ["phrase: coupures de réseaux"],
        ),
        ({"phrase": {"text": "box", "plurals": True}}, "Deux BOXES en rade", ["phrase: BOXES"]),
        ({"regex": r"\b\d+ ?jours?\b"}, "sans internet depuis 3 jours", ["pattern matched: '3 jours'"]),
        ({"lang_in": ["fr", "en"]}, "x", ["language fr"]),
        ({"source_in": "blogs"}, "x", ["source blogs"]),
        ({"brand_in": ["bouygues telecom"]}, "x", ["brand Bouygues Telecom"]),
        ({"complaint_score_at_least": 0.5}, "x", ["complaint score 0.90 (panne, service)"]),
        ({"sentiment_at_most": -0.5}, "x", ["sentiment -0.80 (negative)"]),
        ({"churn": True}, "x", ["threatens to leave: 'je vais résilier'"]),
        ({"churn": False}, "y", ["no churn threat"]),
        ({"author_followers_at_least": 10_000}, "x", ["author has 12,345 followers"]),
        ({"author_is_brand": False}, "x", ["not author is the brand"]),
        ({"all": [{"words_any": ["panne"]}, {"lang_in": "fr"}]}, "panne", ["words: panne", "language fr"]),
        ([{"words_any": ["panne"]}, {"lang_in": "fr"}], "panne", ["words: panne", "language fr"]),
        ({"any": [{"words_any": ["panne"]}, {"words_any": ["fibre"]}]}, "fibre", ["words: fibre"]),
        ({"not": {"words_any": ["merci"]}}, "panne", []),
    ],
)
def test_condition_matches_with_evidence(tree: Any, text: str, evidence: list[str]) -> None:
    scored = mention(
        text,
        lang="fr",
        complaint_score=0.9,
        sentiment=-0.8,
        churn=text == "x",
        author_followers=12_345,
        evidence={
            "complaint": ["panne", "service"],
            "sentiment": ["negative"],
            "churn": ["je vais résilier"],
        },
    )
    assert check(tree, scored) == evidence


@pytest.mark.parametrize(
    ("tree", "text"),
    [
        ({"words_any": ["BT"]}, "mon débit est nul"),  # not inside a word
        ({"words_any": ["bt"]}, "la btree"),
        ({"words_any": ["panne"]}, "dépanneur"),
        ({"words_any": ["résilier"]}, "résiliation"),
        ({"words_all": ["panne", "fibre"]}, "panne de courant"),
        ({"phrase": "coupure de réseau"}, "des coupures de réseaux"),  # plurals off by default
        ({"phrase": {"text": "coupure de réseau", "plurals": True}}, "coupure du réseau"),
        ({"phrase": {"text": "box", "plurals": True}}, "boxer"),
        ({"regex": "remboursement"}, "rembourser"),
        ({"lang_in": "en"}, "x"),
        ({"source_in": ["x"]}, "x"),
        ({"brand_in": "Orange"}, "x"),
        ({"complaint_score_at_least": 0.95}, "x"),
        ({"sentiment_at_most": -0.9}, "x"),
        ({"churn": True}, "y"),
        ({"author_followers_at_least": 20_000}, "x"),
        ({"author_is_brand": True}, "x"),
        ({"not": {"words_any": ["panne"]}}, "panne"),
        ({"any": [{"words_any": ["a1"]}, {"words_any": ["b1"]}]}, "c1"),
    ],
)
def test_condition_does_not_match(tree: Any, text: str) -> None:
    scored = mention(
        text, lang="fr", complaint_score=0.9, sentiment=-0.8, churn=False, author_followers=12_345
    )
    assert check(tree, scored) is None


def test_scores_missing_never_match() -> None:
    bare = mention("x", lang="de")  # no model for this language: no scores
    assert check({"complaint_score_at_least": 0}, bare) is None
    assert check({"sentiment_at_most": 1}, bare) is None
    assert check({"author_followers_at_least": 0}, bare) is None


def test_words_match_in_the_title_too_and_quote_folded_text_when_lengths_differ() -> None:
    assert check({"words_any": ["panne"]}, mention("rien", title="Grosse PANNE")) == ["words: PANNE"]
    # "ß" folds to "ss": offsets move, so the evidence quotes the folded text.
    assert check({"words_any": ["kundigen"]}, mention("Straße: ich will KÜNDIGEN")) == ["words: kundigen"]


def test_author_mentions_within_asks_the_context() -> None:
    tree = {"author_mentions_within": {"count": 3, "within": "1h"}}
    context = FakeContext(4)
    assert check(tree, mention("x"), context) == ["4 mentions by this author within 1h"]
    assert context.asked == [timedelta(hours=1)]
    assert check(tree, mention("x"), FakeContext(2)) is None
    # Without a context (no database) only the mention itself counts.
    assert check(tree, mention("x")) is None
    assert check({"author_mentions_within": {"count": 1, "within": "30m"}}, mention("x")) == [
        "1 mentions by this author within 30m"
    ]


def test_registry_has_every_condition_of_the_issue() -> None:
    assert set(REGISTRY) >= {
        "words_any",
        "words_all",
        "phrase",
        "regex",
        "lang_in",
        "source_in",
        "brand_in",
        "complaint_score_at_least",
        "sentiment_at_most",
        "churn",
        "author_followers_at_least",
        "author_is_brand",
        "author_mentions_within",
        "all",
        "any",
        "not",
    }


def test_keywords_of_all_rules_share_one_automaton() -> None:
    rules = RuleSet(
        tuple(
            settings_from_dict(
                {
                    "brands": [{"name": BRAND}],
                    "rules": [
                        {"name": "a", "when": {"words_any": ["panne", "Résilier"]}},
                        {"name": "b", "when": {"words_all": ["resilier", "fibre"]}},
                        {"name": "c", "when": {"phrase": "je quitte"}},
                        {"name": "d", "when": {"complaint_score_at_least": 0.5}},
                    ],
                }
            ).rules
            or ()
        )
    )
    assert len(rules.keywords) == 4  # panne, resilier (once), fibre, je quitte
    fired = {d.rule for d in rules.evaluate(mention("Fibre en panne, je vais résilier", complaint_score=0.7))}
    assert fired == {"a", "b", "d"}
    assert {d.rule for d in rules.evaluate(mention("rien", complaint_score=0.7))} == {"d"}
    assert {d.rule for d in rules.evaluate(mention("bon je quitte"))} == {"c"}


def test_keyword_index_scans_once_and_keeps_word_boundaries() -> None:
    index = KeywordIndex()
    ids = [index.add(normalize_term(w)) for w in ("BT", "je quitte", "débit")]
    hits = index.scan(normalize_term("Mon debit BT: je quitte BTS"))
    assert sorted(hits) == sorted(ids)
    assert [(s, e) for s, e, whole in hits[ids[0]] if whole] == [(10, 12)]


def test_ten_thousand_keywords_still_match_exactly() -> None:
    words = [f"mot{i}" for i in range(10_000)] + ["résilier"]
    condition = compile_condition({"words_any": words}, "rules[0].when")
    assert condition.check(mention("je vais résilier et mot9999 aussi")) == ["words: mot9999, résilier"]
    assert condition.check(mention("mot99999 mot1x")) is None


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(max_size=300), title=st.none() | st.text(max_size=40))
def test_evaluation_never_raises_on_arbitrary_text(text: str, title: str | None) -> None:
    trees: list[Any] = [
        {"words_any": ["résilier", "je quitte", "BT", "c'est nul", "ß"]},
        {"words_all": ["panne", "fibre"]},
        {"phrase": {"text": "coupure de réseau", "plurals": True}},
        {"phrase": "l'appel"},
        {"regex": r"(\w+)\s+\1"},
        {"not": {"any": [{"lang_in": "fr"}, {"words_any": ["-x-"]}]}},
    ]
    rules = RuleSet(tuple(_rule(f"r{i}", tree) for i, tree in enumerate(trees)))
    for draft in rules.evaluate(mention(text, title=title, lang="fr")):
        assert all(isinstance(line, str) for line in draft.explanation["matched"])


def _rule(name: str, when: Any, **fields: Any) -> Any:
    from monitor.config import Rule

    return Rule.model_validate({"name": name, "when": when, **fields})


# --- bad rules: each error names the path and what is expected ---


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"wordz_any": ["x"]}, "rules[0].when: unknown condition 'wordz_any'; known conditions: all, any,"),
        ({"regex": "(unclosed"}, "rules[0].when.regex: invalid regular expression: missing )"),
        ({"regex": 5}, "rules[0].when.regex: expected a regular expression string"),
        ({"words_any": []}, "rules[0].when.words_any: expected a non-empty list of words or phrases"),
        ({"words_all": ["ok", ""]}, "rules[0].when.words_all: expected a non-empty list"),
        ({"words_any": ["--"]}, "rules[0].when.words_any: '--' has no letter or digit to match"),
        ({"phrase": ""}, "rules[0].when.phrase: expected a phrase"),
        (
            {"phrase": {"text": "x", "plural": True}},
            "rules[0].when.phrase.plural: unknown key; expected plurals, text",
        ),
        ({"phrase": {"plurals": True}}, "rules[0].when.phrase.text: required key is missing"),
        ({"phrase": {"text": "x", "plurals": "yes"}}, "rules[0].when.phrase.plurals: expected true or false"),
        (
            {"complaint_score_at_least": 2},
            "rules[0].when.complaint_score_at_least: expected a number between 0 and 1",
        ),
        ({"sentiment_at_most": "low"}, "rules[0].when.sentiment_at_most: expected a number between -1 and 1"),
        ({"churn": "yes"}, "rules[0].when.churn: expected true or false"),
        ({"author_is_brand": 1}, "rules[0].when.author_is_brand: expected true or false"),
        (
            {"author_followers_at_least": -1},
            "rules[0].when.author_followers_at_least: expected a whole number",
        ),
        (
            {"author_mentions_within": 3},
            "rules[0].when.author_mentions_within: expected a mapping with count, within",
        ),
        (
            {"author_mentions_within": {"count": 0, "within": "1h"}},
            "rules[0].when.author_mentions_within.count: expected a whole number of at least 1",
        ),
        (
            {"author_mentions_within": {"count": 3, "within": "soon"}},
            "rules[0].when.author_mentions_within.within: expected a duration like 30s",
        ),
        (
            {"author_mentions_within": {"count": 3}},
            "rules[0].when.author_mentions_within.within: required key",
        ),
        ({"lang_in": 5}, "rules[0].when.lang_in: expected a non-empty list"),
        ({"all": []}, "rules[0].when.all: expected a non-empty list of conditions"),
        ({"any": [{"churn": True}, {"nope": 1}]}, "rules[0].when.any[1]: unknown condition 'nope'"),
        ({"not": {"words_any": [], "churn": True}}, "rules[0].when.not: expected exactly one condition"),
    ],
)
def test_bad_conditions_are_config_errors_with_their_path(when: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(
            {"brands": [{"name": BRAND}], "rules": [{"name": "r", "when": when}]}, file="m.yaml"
        )
    assert str(info.value).startswith("m.yaml: ")
    assert message in str(info.value)
    assert str(info.value).endswith("(rule 'r')")


def test_errors_in_a_rules_file_name_that_file_and_every_bad_rule(tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text(
        "rules:\n"
        "  - {name: fine, when: {words_any: [panne]}}\n"
        "  - {name: outage, when: {regex: '(panne'}}\n"
        "  - {name: typo, when: {wordz: [x]}}\n",
        encoding="utf-8",
    )
    config = tmp_path / "monitor.yaml"
    config.write_text(f"brands: [{{name: {BRAND}}}]\nrules_files: [extra.yaml]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config, env={})
    message = str(info.value)
    assert "2 errors" in message
    assert f"{tmp_path / 'extra.yaml'}: rules[1].when.regex: invalid regular expression" in message
    assert "(rule 'outage')" in message
    assert f"{tmp_path / 'extra.yaml'}: rules[2].when: unknown condition 'wordz'" in message


def test_schema_errors_in_a_rules_file_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text(
        "- {name: outage, severity: urgent, when: {words_any: [panne]}}\n", encoding="utf-8"
    )
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"brands: [{{name: {BRAND}}}]\nrules: [{{name: a, when: {{churn: true}}}}]\nrules_files: [extra.yaml]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(config, env={})
    assert str(info.value).startswith(f"{tmp_path / 'extra.yaml'}: [0].severity: Input should be")
    assert str(info.value).endswith("(rule 'outage')")


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"rules\[1\]\.name: duplicate rule name 'a'"):
        settings_from_dict(
            {
                "brands": [{"name": BRAND}],
                "rules": [{"name": "a", "when": {"churn": True}}, {"name": "a", "when": {"churn": False}}],
            }
        )


# --- brands, enabled, priority ---


def test_brands_and_enabled_choose_which_rules_run() -> None:
    config = settings_from_dict(
        {
            "brands": [{"name": BRAND}, {"name": "Orange"}],
            "rules": [
                {"name": "orange-only", "when": {"words_any": ["panne"]}, "brands": ["Orange"]},
                {"name": "off", "when": {"words_any": ["panne"]}, "enabled": False},
                {"name": "all", "severity": "low", "when": {"words_any": ["panne"]}},
            ],
        }
    )
    rules = RuleSet.from_settings(config)
    assert [r.rule.name for r in rules.rules] == ["orange-only", "all"]
    assert [d.rule for d in rules.evaluate(mention("panne"))] == ["all"]
    assert [d.rule for d in rules.evaluate(mention("panne", brand="Orange"))] == ["orange-only", "all"]


def test_priority_puts_severity_first_then_reach() -> None:
    rules = RuleSet(
        (
            _rule("low", {"words_any": ["panne"]}, severity="low"),
            _rule("critical", {"words_any": ["panne"]}, severity="critical"),
        )
    )
    small, big = (
        {d.rule: d.priority for d in rules.evaluate(mention("panne", author_followers=n))}
        for n in (10, 10**6)
    )
    assert small["critical"] > big["low"]
    assert big["critical"] > small["critical"] and big["low"] > small["low"]


# --- database: author_mentions_within and cooldown, on SQLite and PostgreSQL ---


def post(external_id: str, text: str, at: datetime, author: str = "x:1", **fields: Any) -> Mention:
    return Mention(
        source="blogs",
        external_id=external_id,
        text=f"{BRAND} {text}",
        author_id=author,
        published_at=at,
        **fields,
    )


def ingest(db: Database, pipeline: Pipeline, mentions: list[Mention], now: datetime) -> Any:
    with db.session() as session:
        return pipeline.ingest(session, mentions, source="blogs", now=now)


def test_author_mentions_within_counts_in_the_database(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    rules = [{"name": "repeat", "when": {"author_mentions_within": {"count": 3, "within": "1h"}}}]
    pipeline = Pipeline(make_settings(rules=rules), enrichers=[pass_through])
    hour = timedelta(hours=1)
    result = ingest(
        db,
        pipeline,
        [
            post("old", "hier", NOW - 3 * hour),
            post("1", "un", NOW - 50 * timedelta(minutes=1)),
            post("other", "autre", NOW - 40 * timedelta(minutes=1), author="x:2"),
        ],
        NOW,
    )
    assert result.flags == 0
    assert ingest(db, pipeline, [post("2", "deux", NOW - 20 * timedelta(minutes=1))], NOW).flags == 0
    third = ingest(db, pipeline, [post("3", "trois", NOW)], NOW)
    assert third.flags == 1
    with db.session() as session:
        (flag,) = session.scalars(select(FlagRow))
        assert flag.explanation["matched"] == ["3 mentions by this author within 1h"]
        context = DatabaseContext(session)
        later = Mention(
            source="blogs", external_id="z", text="", brand=BRAND, author_id="x:1", published_at=NOW
        )
        assert context.author_mentions(later, hour) == 4  # 3 stored in (NOW-1h, NOW], plus this one
        assert context.author_mentions(later, 4 * hour) == 5
        assert context.author_mentions(Mention(source="s", external_id="y", text=""), hour) == 1


def test_cooldown_keeps_a_rule_from_alerting_twice_for_one_author(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    rules = [
        {
            "name": "churn",
            "severity": "high",
            "when": {"words_any": ["résilier"]},
            "notify": ["ops"],
            "cooldown": "1h",
        }
    ]
    pipeline = Pipeline(make_settings(rules=rules, channels=CHANNELS), enrichers=[pass_through])

    def close_cases() -> None:
        with db.session() as session:
            for case in session.scalars(select(CaseRow)):
                case.status = "resolved"

    def alerts() -> int:
        with db.session() as session:
            return int(session.scalar(select(func.count()).select_from(OutboxRow)) or 0)

    assert ingest(db, pipeline, [post("1", "je vais résilier", NOW)], NOW).alerts_queued == 1
    close_cases()
    later = NOW + timedelta(minutes=30)
    again = ingest(db, pipeline, [post("2", "je vais résilier", later)], later)
    assert (again.flags, again.cases_opened, again.alerts_queued) == (1, 1, 0)  # flag and case, no alert
    with db.session() as session:
        flag = session.scalars(select(FlagRow).order_by(FlagRow.id.desc())).first()
        assert flag is not None and flag.case_id is not None
        assert flag.explanation["cooldown"] == "no alert: this rule flagged the same author within 1h"
    # Another author is not in this author's cooldown.
    other = ingest(db, pipeline, [post("3", "je vais résilier", later, author="x:2")], later)
    assert other.alerts_queued == 1
    close_cases()
    after = NOW + timedelta(minutes=100)
    assert ingest(db, pipeline, [post("4", "je vais résilier", after)], after).alerts_queued == 1
    assert alerts() == 3


def test_without_cooldown_a_reopened_case_alerts_again(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    rules = [{"name": "churn", "when": {"words_any": ["résilier"]}, "notify": ["ops"]}]
    pipeline = Pipeline(make_settings(rules=rules, channels=CHANNELS), enrichers=[pass_through])
    assert ingest(db, pipeline, [post("1", "résilier", NOW)], NOW).alerts_queued == 1
    with db.session() as session:
        for case in session.scalars(select(CaseRow)):
            case.status = "resolved"
    later = NOW + timedelta(minutes=5)
    assert ingest(db, pipeline, [post("2", "résilier", later)], later).alerts_queued == 1


# --- the CLI: monitor rules check | test | backtest ---


def write_config(tmp_path: Path, database: str, rules: str = "", extra: str = "") -> Path:
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"database: '{database}'\nbrands:\n  - name: {BRAND}\n    aliases: [Bouygues Télécom]\n"
        "channels:\n  ops: {type: slack, webhook_url: 'https://hooks.example/T/B/x'}\n" + rules + extra,
        encoding="utf-8",
    )
    return config


RULES = """rules:
  - name: churn
    severity: high
    when: {any: [{churn: true}, {words_any: [résilier]}]}
    notify: [ops]
    cooldown: 1h
  - name: outage
    when: {words_any: [panne]}
  - name: influencer
    severity: low
    when: {author_followers_at_least: 10000}
    enabled: false
"""


def test_rules_check_summarizes_valid_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "sqlite:///unused.db", RULES)
    assert main(["--config", str(config), "rules", "check"]) == 0
    out = capsys.readouterr().out
    assert "3 rules ok (2 enabled, 1 disabled)" in out
    assert "churn [high] notify: ops; cooldown 1h" in out
    assert "influencer [low] notify: none; disabled" in out


def test_rules_check_without_rules_names_the_built_in_pack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "sqlite:///unused.db")
    assert main(["--config", str(config), "rules", "check"]) == 0
    assert "the built-in pack applies (churn-threat, complaint)" in capsys.readouterr().out


def test_rules_check_exits_2_naming_file_rule_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "sqlite:///unused.db", RULES.replace("[panne]", "[]"))
    assert main(["--config", str(config), "rules", "check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"config error: {config}: rules[1].when.words_any: expected a non-empty list")
    assert "(rule 'outage')" in err


def test_rules_test_shows_which_rules_fire_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "sqlite:///unused.db", RULES)
    argv = ["--config", str(config), "rules", "test", "Bouygues Télécom en panne, je vais résilier"]
    assert main([*argv, "--author-followers", "20000", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["brand"] == BRAND and result["lang"] == "fr" and result["churn"] is True
    fired = {f["rule"]: f for f in result["fired"]}
    assert set(fired) == {"churn", "outage"}
    assert "words: résilier" in fired["churn"]["matched"]
    assert fired["outage"]["matched"] == ["words: panne"]
    assert result["disabled"] == ["influencer"] and result["not_fired"] == []
    assert main([*argv, "--lang", "fr"]) == 0
    out = capsys.readouterr().out
    assert "churn yes" in out and "words: panne" in out
    assert main(["--config", str(config), "rules", "test", "Merci !", "--brand", BRAND]) == 0
    assert "no rule fires" in capsys.readouterr().out
    assert main(["--config", str(config), "rules", "test", "x", "--brand", "Nope"]) == 2
    assert "unknown brand 'Nope'" in capsys.readouterr().err


def test_rules_backtest_counts_without_writing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    config = write_config(tmp_path, db_url, "rules:\n  - {name: outage, when: {words_any: [panne]}}\n")
    db = Database(db_url)
    pipeline = Pipeline(load_config(config, env={}), enrichers=[pass_through])
    for days, posts in (
        (2, [post("1", "en panne, je vais résilier", now - timedelta(days=2), author="x:1")]),
        (1, [post("2", "panne encore", now - timedelta(days=1), author="x:2")]),
        (
            0,
            [
                post("3", "je vais résilier", now - timedelta(hours=1), author="x:3"),
                post("4", "tout va bien", now, author="x:4"),
            ],
        ),
    ):
        ingest(db, pipeline, posts, now - timedelta(days=days))

    def counts() -> dict[str, int]:
        with db.session() as session:
            return {
                table.__tablename__: int(session.scalar(select(func.count()).select_from(table)) or 0)
                for table in (MentionRow, FlagRow, CaseRow, CaseEventRow, OutboxRow, AggregateAlertRow)
            }

    before = counts()
    assert before["flags"] == 2
    # The same rule plus a new one, tried before it goes live (disabled).
    write_config(tmp_path, db_url, RULES)
    argv = ["--config", str(config), "rules", "backtest", "--since", "30d"]
    assert main([*argv, "--format", "json", "--examples", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mentions"] == 4
    by_rule = {r["rule"]: r for r in result["rules"]}
    assert (by_rule["outage"]["would_flag"], by_rule["outage"]["new"], by_rule["outage"]["existing"]) == (
        2,
        0,
        2,
    )
    assert (by_rule["churn"]["would_flag"], by_rule["churn"]["new"]) == (2, 2)
    (example,) = by_rule["churn"]["examples"]
    assert example["mention_id"] and example["matched"] == ["words: résilier"]
    assert example["already_flagged"] is False
    datetime.fromisoformat(example["published_at"])
    assert by_rule["influencer"]["enabled"] is False and by_rule["influencer"]["would_flag"] == 0
    assert main([*argv, "--rule", "outage", "--format", "json"]) == 0
    assert [r["rule"] for r in json.loads(capsys.readouterr().out)["rules"]] == ["outage"]
    assert main([*argv, "--since", "1d"]) == 0
    out = capsys.readouterr().out
    assert "2 mentions collected since" in out and "why: words: résilier" in out
    assert main([*argv, "--rule", "nope"]) == 2
    assert "unknown rule 'nope'; known: churn, outage, influencer" in capsys.readouterr().err
    assert counts() == before
    db.dispose()


def test_rules_test_counts_only_the_text_for_author_mentions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = "rules:\n  - {name: repeat, when: {author_mentions_within: {count: 1, within: 1h}}}\n"
    config = write_config(tmp_path, "sqlite:///unused.db", rules)
    assert main(["--config", str(config), "rules", "test", "Bouygues Telecom", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [f["rule"] for f in result["fired"]] == ["repeat"]
    assert result["notes"] == ["author_mentions_within counts only this text here (no database)"]


@settings(max_examples=300, deadline=None, database=None)
@given(
    words=st.lists(st.sampled_from(["panne", "fibre", "résilier", "merci", "box", "zut"]), max_size=6),
    complaint=st.none() | st.floats(0, 1),
    sentiment=st.none() | st.floats(-1, 1),
)
@example(words=["résilier"], complaint=0.3, sentiment=-0.4)  # scores exactly at thresholds
@example(words=[], complaint=0.6, sentiment=-0.8)
@example(words=[], complaint=0.9, sentiment=None)
def test_the_rule_index_fires_exactly_what_evaluating_every_rule_fires(
    words: list[str], complaint: float | None, sentiment: float | None
) -> None:
    """Rules are only evaluated when a keyword or score threshold says they could fire: that
    shortcut must never change the outcome."""
    rules = _indexed_rules()  # one rule set for every example: its per-score candidate lists too
    post = mention(" ".join(words), lang="fr")
    post.complaint_score, post.sentiment = complaint, sentiment
    fired = [draft.rule for draft in rules.evaluate(post)]
    every = [c.rule.name for c in rules.rules if c.condition.check(post) is not None]
    assert fired == every


@cache
def _indexed_rules() -> RuleSet:
    trees: list[Any] = [
        {"words_any": ["panne", "box"]},
        {"all": [{"complaint_score_at_least": 0.6}, {"lang_in": ["fr"]}]},
        {"any": [{"sentiment_at_most": -0.4}, {"words_all": ["fibre", "merci"]}]},
        {"all": [{"words_any": ["résilier"]}, {"complaint_score_at_least": 0.3}]},
        {"any": [{"complaint_score_at_least": 0.9}, {"sentiment_at_most": -0.8}]},
        {"not": {"words_any": ["zut"]}},
        {"complaint_score_at_least": 0.0},
        {"all": [{"sentiment_at_most": 0.2}, {"complaint_score_at_least": 0.6}]},
    ]
    return RuleSet(tuple(_rule(f"r{i}", tree) for i, tree in enumerate(trees)))


def test_rules_sharing_evidence_still_get_explanations_of_their_own() -> None:
    """Evidence lines are built once per mention and shared between rules; the lists in the
    explanations must not be."""
    rules = RuleSet(
        (
            _rule("a", {"all": [{"words_any": ["panne"]}, {"complaint_score_at_least": 0.5}]}),
            _rule("b", {"all": [{"words_any": ["panne", "fibre"]}, {"complaint_score_at_least": 0.7}]}),
            _rule("c", {"words_all": ["panne"]}),
        )
    )
    post = mention("Fibre en PANNE", complaint_score=0.8, evidence={"complaint": ["panne"]})
    first, second, third = rules.evaluate(post)
    assert first.explanation["matched"] == ["words: PANNE", "complaint score 0.80 (panne)"]
    assert second.explanation["matched"] == ["words: Fibre, PANNE", "complaint score 0.80 (panne)"]
    assert third.explanation["matched"] == ["words: PANNE"]
    first.explanation["matched"].append("edited")
    assert second.explanation["matched"][-1] == "complaint score 0.80 (panne)"
    assert rules.evaluate(post)[0].explanation["matched"] == ["words: PANNE", "complaint score 0.80 (panne)"]


@settings(max_examples=500, deadline=None, database=None)
@given(text=st.text(alphabet=st.sampled_from(list(" -_'\t\n\u00a0\u2009\u3000aé’ß😡")) | st.characters()))
def test_mention_text_normalizes_as_the_plain_mapping_says(text: str) -> None:
    """The fast paths (a byte table for ASCII, a regex otherwise) must give what mapping every
    separator to a space and collapsing the runs gives, and the same offsets back."""
    folded = fold(text)
    spaced = folded.translate(_SEPARATORS)
    normalized = re.sub(" {2,}", " ", spaced)
    shifts, shift = [], 0
    for run in re.finditer(" {2,}", spaced):
        shift += run.end() - run.start() - 1
        shifts.append((run.end() - shift, shift))
    assert _normalize(folded) == (normalized, tuple(shifts))
