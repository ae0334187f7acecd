"""Compile rules once; evaluate each new mention; explain every flag."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any

import yaml

from monitor.confbase import severity_rank
from monitor.config import Rule, Settings
from monitor.mention import Mention
from monitor.rules.conditions import (
    Condition,
    KeywordIndex,
    RuleContext,
    Subject,
    Test,
    compile_condition,
)


@dataclass(slots=True)
class FlagDraft:
    """A rule match on one mention, before it is stored.

    Not frozen: a frozen dataclass sets each field through `object.__setattr__`, 3-4x the cost
    of a plain one, and a busy mention raises ~10 drafts. Nothing changes a draft after
    `RuleSet.evaluate` returns it.
    """

    rule: str
    severity: str
    priority: float
    explanation: dict[str, Any]
    notify: tuple[str, ...]
    cooldown: timedelta | None


_SCORE_CACHE_ROOM = 1 << 18  # rule references the per-score candidate lists may hold (~2 MB)

# A rule as evaluation reads it: test, brands, name, description, severity, notify, cooldown.
_Plan = tuple[Test, tuple[str, ...], str, str | None, str, tuple[str, ...], timedelta | None]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    condition: Condition


def default_rules() -> tuple[Rule, ...]:
    text = resources.files("monitor.data").joinpath("default_rules.yaml").read_text(encoding="utf-8")
    return tuple(Rule.model_validate(raw) for raw in yaml.safe_load(text)["rules"])


def priority(severity: str, followers: int | None) -> float:
    """Severity first, then reach: a critical post outranks any high one; followers break ties."""
    reach = math.log10(1 + max(0, followers or 0))  # 0 .. ~8
    return round(max(severity_rank(severity), 1) * 10 + min(reach, 9.99), 2)


class RuleSet:
    """Enabled rules compiled once, their words and phrases in one shared keyword automaton.

    Per mention the automaton runs once; rules that need a keyword are evaluated only when one
    of theirs was hit, the others always.
    """

    def __init__(self, rules: tuple[Rule, ...], *, file: str = "<config>") -> None:
        self.keywords = KeywordIndex()
        self.rules = [
            CompiledRule(rule, compile_condition(rule.when, f"rules[{i}].when", file, keywords=self.keywords))
            for i, rule in enumerate(rules)
            if rule.enabled
        ]
        self.keywords.prepare()
        self._always: list[int] = []
        self._by_keyword: dict[int, list[int]] = {}
        complaint: list[tuple[float, int]] = []  # (threshold, rule): may fire when score >= threshold
        sentiment: list[tuple[float, int]] = []  # (threshold, rule): may fire when sentiment <= threshold
        for n, compiled in enumerate(self.rules):
            required = compiled.condition.required()
            if required is None:
                self._always.append(n)
                continue
            for trigger in required:
                if isinstance(trigger, int):
                    self._by_keyword.setdefault(trigger, []).append(n)
                else:
                    (complaint if trigger[0] == "complaint" else sentiment).append((trigger[1], n))
        complaint.sort()
        sentiment.sort()
        self._complaint_at = [t for t, _ in complaint]
        self._complaint_rules = [n for _, n in complaint]
        self._sentiment_at = [t for t, _ in sentiment]
        self._sentiment_rules = [n for _, n in sentiment]
        self._gated = bool(self._by_keyword or complaint or sentiment)
        # What evaluating a rule needs, unpacked once here rather than per mention.
        self._plans: list[_Plan] = [
            (
                c.condition.test,
                c.rule.brands,
                c.rule.name,
                c.rule.description,
                c.rule.severity,
                c.rule.notify,
                c.rule.cooldown,
            )
            for c in self.rules
        ]
        # Most mentions hit no keyword: their candidates depend only on where the two scores fall
        # among the thresholds, a handful of cases, each sorted into rule order once.
        self._by_scores: dict[tuple[int, int], list[_Plan]] = {}
        self._by_scores_room = _SCORE_CACHE_ROOM

    @classmethod
    def from_settings(cls, settings: Settings) -> RuleSet:
        """The config's rules, else the built-in pack alerting every configured channel."""
        if settings.rules is not None:
            return cls(settings.rules)
        every_channel = tuple(settings.channels)
        return cls(tuple(rule.model_copy(update={"notify": every_channel}) for rule in default_rules()))

    def _candidates(self, subject: Subject) -> list[_Plan]:
        """The rules this mention could fire, in rule order: those with no cheap necessary test,
        those one of whose keywords it contains, those whose score threshold it reaches."""
        if not self._gated:
            return self._plans
        mention = subject.mention
        score = mention.complaint_score
        low = 0 if score is None else bisect_right(self._complaint_at, score)  # rules[:low] reached
        score = mention.sentiment
        high = len(self._sentiment_at) if score is None else bisect_left(self._sentiment_at, score)
        hits = subject.hits(self.keywords) if self._by_keyword else None
        if hits:
            return self._merge(low, high, hits)
        chosen = self._by_scores.get((low, high))
        if chosen is None:
            chosen = self._merge(low, high, ())
            if self._by_scores_room >= len(chosen):  # bounded, whatever the number of thresholds
                self._by_scores_room -= len(chosen) + 1
                self._by_scores[low, high] = chosen
        return chosen

    def _merge(self, low: int, high: int, keywords: Iterable[int]) -> list[_Plan]:
        """Rules always evaluated, those of the keywords hit, those of the complaint thresholds
        [:low] and sentiment thresholds [high:], in rule order."""
        chosen = set(self._always)
        by_keyword = self._by_keyword
        for kid in keywords:
            rules = by_keyword.get(kid)
            if rules is not None:
                chosen.update(rules)
        chosen.update(self._complaint_rules[:low])
        chosen.update(self._sentiment_rules[high:])
        plans = self._plans
        return [plans[n] for n in sorted(chosen)]

    def evaluate(self, mention: Mention, context: RuleContext | None = None) -> list[FlagDraft]:
        """The flags this mention raises, in rule order. `context` answers database questions
        (`author_mentions_within`); without it those conditions see only the mention itself."""
        subject = Subject(mention, context)
        brand = mention.brand
        drafts = []
        priorities: dict[str, float] = {}  # the same for every rule of a severity: compute once
        for test, brands, name, description, severity, notify, cooldown in self._candidates(subject):
            if brands and brand not in brands:
                continue
            found = test(subject)
            if found is None:
                continue
            rank = priorities.get(severity)
            if rank is None:
                rank = priorities[severity] = priority(severity, mention.author_followers)
            explanation = {"rule": name, "description": description, "matched": [*found]}
            drafts.append(FlagDraft(name, severity, rank, explanation, notify, cooldown))
        return drafts
