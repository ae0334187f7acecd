"""Compile rules once; evaluate each new mention; explain every flag."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any

import yaml

from monitor.confbase import severity_rank
from monitor.config import Rule, Settings
from monitor.mention import Mention
from monitor.rules.conditions import Condition, KeywordIndex, RuleContext, Subject, compile_condition


@dataclass(frozen=True, slots=True)
class FlagDraft:
    """A rule match on one mention, before it is stored."""

    rule: str
    severity: str
    priority: float
    explanation: dict[str, Any]
    notify: tuple[str, ...]
    cooldown: timedelta | None


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

    @classmethod
    def from_settings(cls, settings: Settings) -> RuleSet:
        """The config's rules, else the built-in pack alerting every configured channel."""
        if settings.rules is not None:
            return cls(settings.rules)
        every_channel = tuple(settings.channels)
        return cls(tuple(rule.model_copy(update={"notify": every_channel}) for rule in default_rules()))

    def _candidates(self, subject: Subject) -> list[CompiledRule]:
        """The rules this mention could fire, in rule order: those with no cheap necessary test,
        those one of whose keywords it contains, those whose score threshold it reaches."""
        if not self._gated:
            return self.rules
        chosen = set(self._always)
        if self._by_keyword:
            for kid in subject.hits(self.keywords):
                chosen.update(self._by_keyword.get(kid, ()))
        score = subject.mention.complaint_score
        if score is not None and self._complaint_at:
            chosen.update(self._complaint_rules[: bisect_right(self._complaint_at, score)])
        score = subject.mention.sentiment
        if score is not None and self._sentiment_at:
            chosen.update(self._sentiment_rules[bisect_left(self._sentiment_at, score) :])
        return [self.rules[n] for n in sorted(chosen)]

    def evaluate(self, mention: Mention, context: RuleContext | None = None) -> list[FlagDraft]:
        """The flags this mention raises, in rule order. `context` answers database questions
        (`author_mentions_within`); without it those conditions see only the mention itself."""
        subject = Subject(mention, context)
        drafts = []
        priorities: dict[str, float] = {}  # the same for every rule of a severity: compute once
        for compiled in self._candidates(subject):
            rule = compiled.rule
            if rule.brands and mention.brand not in rule.brands:
                continue
            evidence = compiled.condition.evaluate(subject)
            if evidence is None:
                continue
            rank = priorities.get(rule.severity)
            if rank is None:
                rank = priorities[rule.severity] = priority(rule.severity, mention.author_followers)
            drafts.append(
                FlagDraft(
                    rule=rule.name,
                    severity=rule.severity,
                    priority=rank,
                    explanation={
                        "rule": rule.name,
                        "description": rule.description,
                        "matched": [e for e in evidence if e],
                    },
                    notify=rule.notify,
                    cooldown=rule.cooldown,
                )
            )
        return drafts
