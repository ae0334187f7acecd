"""Compile rules once; evaluate each new mention; explain every flag."""

from __future__ import annotations

import math
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
        for n, compiled in enumerate(self.rules):
            required = compiled.condition.required()
            if required is None:
                self._always.append(n)
            else:
                for kid in required:
                    self._by_keyword.setdefault(kid, []).append(n)

    @classmethod
    def from_settings(cls, settings: Settings) -> RuleSet:
        """The config's rules, else the built-in pack alerting every configured channel."""
        if settings.rules is not None:
            return cls(settings.rules)
        every_channel = tuple(settings.channels)
        return cls(tuple(rule.model_copy(update={"notify": every_channel}) for rule in default_rules()))

    def _candidates(self, subject: Subject) -> list[CompiledRule]:
        if not self._by_keyword:
            return self.rules
        hits = subject.hits(self.keywords)
        if not hits:
            return [self.rules[n] for n in self._always]
        chosen = set(self._always)
        for kid in hits:
            chosen.update(self._by_keyword.get(kid, ()))
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
