"""Rules tried before they go live: `monitor rules check`, `test` and `backtest`.

`describe` summarizes the validated rules; `try_text` runs the analysis and the rules on one
text; `backtest` re-runs the rules over stored mentions. None of them writes anything.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.config import Rule, Settings
from monitor.errors import ConfigError
from monitor.mention import Mention
from monitor.rules.context import DatabaseContext
from monitor.rules.engine import RuleSet, default_rules
from monitor.storage.tables import FlagRow, MentionRow

CHUNK = 1000
EXCERPT = 200


def configured_rules(settings: Settings) -> tuple[tuple[Rule, ...], bool]:
    """The rules in force and whether they are the built-in pack (which alerts every channel)."""
    if settings.rules is not None:
        return settings.rules, False
    every_channel = tuple(settings.channels)
    return tuple(rule.model_copy(update={"notify": every_channel}) for rule in default_rules()), True


def describe(settings: Settings) -> dict[str, Any]:
    """What `monitor rules check` reports once the config has loaded (so every rule is valid)."""
    rules, builtin = configured_rules(settings)
    compiled = RuleSet(rules)
    return {
        "builtin": builtin,
        "rules": [
            {
                "name": rule.name,
                "severity": rule.severity,
                "enabled": rule.enabled,
                "notify": list(rule.notify),
                "cooldown": rule.cooldown,
                "brands": list(rule.brands),
            }
            for rule in rules
        ],
        "keywords": len(compiled.keywords),
        "aggregates": [
            {"name": a.name, "type": a.type, "severity": a.severity, "enabled": a.enabled}
            for a in settings.aggregates
        ],
        "rules_files": list(settings.rules_files),
    }


def _uses_database(rule: Rule) -> bool:
    return "author_mentions_within" in json.dumps(rule.when, default=str)


def _draft_dict(draft: Any) -> dict[str, Any]:
    return {
        "rule": draft.rule,
        "severity": draft.severity,
        "priority": draft.priority,
        "matched": list(draft.explanation.get("matched") or ()),
        "description": draft.explanation.get("description"),
    }


def try_text(
    settings: Settings,
    text: str,
    *,
    brand: str | None = None,
    lang: str | None = None,
    source: str = "test",
    followers: int | None = None,
) -> dict[str, Any]:
    """Analyse `text` as a new mention and evaluate the rules on it: which fire, and why."""
    from monitor.analysis.brands import BrandMatcher
    from monitor.analysis.enrich import Analyzer

    names = [b.name for b in settings.brands]
    if brand is not None and brand not in names:
        raise ConfigError(f"unknown brand {brand!r}; known: {', '.join(names)}")
    matcher = BrandMatcher(settings.brands)
    brand = brand or matcher.match(text) or names[0]
    mention = Mention(
        source=source,
        external_id="test",
        text=text,
        lang=lang.lower() if lang else None,
        brand=brand,
        author_followers=followers,
    )
    Analyzer.for_settings(settings)([mention])
    rules, _ = configured_rules(settings)
    fired = RuleSet(rules).evaluate(mention)
    names_fired = {d.rule for d in fired}
    notes = []
    if any(_uses_database(r) for r in rules if r.enabled):
        notes.append("author_mentions_within counts only this text here (no database)")
    return {
        "text": text,
        "brand": brand,
        "source": source,
        "lang": mention.lang,
        "author_followers": followers,
        "sentiment": mention.sentiment,
        "complaint_score": mention.complaint_score,
        "churn": mention.churn,
        "fired": [_draft_dict(d) for d in sorted(fired, key=lambda d: d.priority, reverse=True)],
        "not_fired": [r.name for r in rules if r.enabled and r.name not in names_fired],
        "disabled": [r.name for r in rules if not r.enabled],
        "notes": notes,
    }


def _stored(session: Session, since: datetime) -> Iterator[Mention]:
    """Stored mentions collected since `since`, oldest first, in chunks (bounded memory)."""
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(MentionRow)
                .where(MentionRow.collected_at >= since, MentionRow.id > last)
                .order_by(MentionRow.id)
                .limit(CHUNK)
            )
        )
        if not rows:
            return
        for row in rows:
            yield Mention(
                id=row.id,
                source=row.source,
                external_id=row.external_id,
                text=row.text,
                url=row.url,
                title=row.title,
                author_id=row.author_id,
                author_name=row.author_name,
                author_followers=row.author_followers,
                author_handle=row.author_handle,
                lang=row.lang,
                published_at=row.published_at,
                conversation_id=row.conversation_id,
                brand=row.brand,
                author_is_brand=bool(row.author_is_brand),
                collected_at=row.collected_at,
                sentiment=row.sentiment,
                complaint_score=row.complaint_score,
                churn=row.churn,
            )
        last = rows[-1].id


@dataclass(slots=True)
class _Tally:
    examples: deque[dict[str, Any]]
    would_flag: int = 0
    new: int = 0
    existing: int = 0


def backtest(
    session: Session, settings: Settings, since: datetime, *, rule: str | None = None, examples: int = 3
) -> dict[str, Any]:
    """Re-run the rules over the mentions collected since `since`: per rule, how many posts it
    would flag, how many of those it already flagged, and the latest examples. Disabled rules are
    included (trying one before enabling it is the point). Reads only."""
    rules, _ = configured_rules(settings)
    if rule is not None:
        rules = tuple(r for r in rules if r.name == rule)
        if not rules:
            known = ", ".join(r.name for r in configured_rules(settings)[0])
            raise ConfigError(f"unknown rule {rule!r}; known: {known}")
    compiled = RuleSet(tuple(r.model_copy(update={"enabled": True}) for r in rules))
    existing = {
        (mention_id, name)
        for mention_id, name in session.execute(
            select(FlagRow.mention_id, FlagRow.rule)
            .join(MentionRow, MentionRow.id == FlagRow.mention_id)
            .where(MentionRow.collected_at >= since)
        )
    }
    tallies = {r.name: _Tally(deque(maxlen=examples)) for r in rules}
    context = DatabaseContext(session)
    evaluated = 0
    for mention in _stored(session, since):
        evaluated += 1
        for draft in compiled.evaluate(mention, context):
            tally = tallies[draft.rule]
            already = (mention.id, draft.rule) in existing
            tally.would_flag += 1
            tally.existing += already
            tally.new += not already
            if examples:
                text = " ".join(f"{mention.title or ''} {mention.text}".split())
                tally.examples.append(
                    {
                        "mention_id": mention.id,
                        "published_at": mention.published_at or mention.collected_at,
                        "brand": mention.brand,
                        "source": mention.source,
                        "author": mention.author_name or mention.author_handle or mention.author_id,
                        "text": text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…",
                        "matched": draft.explanation["matched"],
                        "already_flagged": already,
                    }
                )
    return {
        "since": since,
        "mentions": evaluated,
        "rules": [
            {
                "rule": r.name,
                "severity": r.severity,
                "enabled": r.enabled,
                "would_flag": tallies[r.name].would_flag,
                "new": tallies[r.name].new,
                "existing": tallies[r.name].existing,
                "examples": list(reversed(tallies[r.name].examples)),
            }
            for r in rules
        ],
    }
