"""The one registry of rule conditions.

A condition is compiled once from its config value and then evaluated per mention. Evaluation
returns the evidence a support agent reads ("words: résilier") or None when it does not match.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monitor.analysis.text import fold
from monitor.errors import ConfigError
from monitor.mention import Mention

Evidence = list[str]


class Condition:
    def evaluate(self, mention: Mention) -> Evidence | None:  # pragma: no cover - interface
        raise NotImplementedError


Compiler = Callable[[Any, str, str], Condition]
REGISTRY: dict[str, Compiler] = {}


def condition(name: str) -> Callable[[Compiler], Compiler]:
    def register(compiler: Compiler) -> Compiler:
        REGISTRY[name] = compiler
        return compiler

    return register


def compile_condition(tree: Any, path: str, file: str = "<config>") -> Condition:
    """Compile a `{name: argument}` mapping (or a list, meaning `all`) into a Condition."""
    if isinstance(tree, list):
        return compile_condition({"all": tree}, path, file)
    if not isinstance(tree, dict) or len(tree) != 1:
        raise ConfigError(
            "expected exactly one condition as `{name: value}` (combine several with all/any)",
            file=file,
            path=path,
        )
    ((name, argument),) = tree.items()
    if name not in REGISTRY:
        raise ConfigError(
            f"unknown condition {name!r}; known conditions: {', '.join(sorted(REGISTRY))}",
            file=file,
            path=path,
        )
    return REGISTRY[name](argument, f"{path}.{name}", file)


def validate_condition(tree: Any, path: str, file: str = "<config>") -> None:
    compile_condition(tree, path, file)


def _strings(argument: Any, path: str, file: str) -> list[str]:
    if isinstance(argument, str):
        argument = [argument]
    if (
        not isinstance(argument, list)
        or not argument
        or not all(isinstance(w, str) and w.strip() for w in argument)
    ):
        raise ConfigError("expected a non-empty list of words or phrases", file=file, path=path)
    return argument


def _number(argument: Any, path: str, file: str, low: float, high: float) -> float:
    if isinstance(argument, bool) or not isinstance(argument, int | float) or not low <= argument <= high:
        raise ConfigError(f"expected a number between {low:g} and {high:g}", file=file, path=path)
    return float(argument)


def words_pattern(words: list[str]) -> re.Pattern[str]:
    """One regex for many words: accent/case-folded, whole words, flexible inner spacing."""
    parts = sorted({r"[\s\-_']+".join(map(re.escape, fold(w).split())) for w in words}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)")


def searchable_text(mention: Mention) -> tuple[str, str]:
    """(folded, original) text of a mention: match on the first, quote from the second."""
    original = f"{mention.title}\n{mention.text}" if mention.title else mention.text
    folded = fold(original)
    return folded, original if len(folded) == len(original) else folded


@dataclass(slots=True)
class _Words(Condition):
    pattern: re.Pattern[str]
    needed: int  # 1 for any; len(words) for all

    def evaluate(self, mention: Mention) -> Evidence | None:
        folded, original = searchable_text(mention)
        found = sorted({original[m.start() : m.end()] for m in self.pattern.finditer(folded)})
        if len(found) >= self.needed and found:
            return [f"words: {', '.join(found)}"]
        return None


@condition("words_any")
def _words_any(argument: Any, path: str, file: str) -> Condition:
    return _Words(words_pattern(_strings(argument, path, file)), 1)


@condition("words_all")
def _words_all(argument: Any, path: str, file: str) -> Condition:
    words = _strings(argument, path, file)
    return _Words(words_pattern(words), len({fold(w) for w in words}))


@dataclass(slots=True)
class _Regex(Condition):
    pattern: re.Pattern[str]

    def evaluate(self, mention: Mention) -> Evidence | None:
        match = self.pattern.search(f"{mention.title}\n{mention.text}" if mention.title else mention.text)
        return [f"pattern matched: {match.group(0)!r}"] if match else None


@condition("regex")
def _regex(argument: Any, path: str, file: str) -> Condition:
    if not isinstance(argument, str):
        raise ConfigError("expected a regular expression string", file=file, path=path)
    try:
        return _Regex(re.compile(argument, re.IGNORECASE))
    except re.error as exc:
        raise ConfigError(f"invalid regular expression: {exc}", file=file, path=path) from None


@dataclass(slots=True)
class _Field(Condition):
    label: str
    test: Callable[[Mention], Any]

    def evaluate(self, mention: Mention) -> Evidence | None:
        value = self.test(mention)
        return [self.label.format(value=value)] if value is not None and value is not False else None


def _with_evidence(label: str, mention: Mention, kind: str) -> str:
    found = mention.evidence.get(kind)
    return f"{label} ({', '.join(found)})" if found else label


@dataclass(slots=True)
class _Complaint(Condition):
    threshold: float

    def evaluate(self, mention: Mention) -> Evidence | None:
        score = mention.complaint_score
        if score is None or score < self.threshold:
            return None
        return [_with_evidence(f"complaint score {score:.2f}", mention, "complaint")]


@condition("complaint_score_at_least")
def _complaint_at_least(argument: Any, path: str, file: str) -> Condition:
    return _Complaint(_number(argument, path, file, 0, 1))


@dataclass(slots=True)
class _Sentiment(Condition):
    threshold: float

    def evaluate(self, mention: Mention) -> Evidence | None:
        score = mention.sentiment
        if score is None or score > self.threshold:
            return None
        return [_with_evidence(f"sentiment {score:+.2f}", mention, "sentiment")]


@condition("sentiment_at_most")
def _sentiment_at_most(argument: Any, path: str, file: str) -> Condition:
    return _Sentiment(_number(argument, path, file, -1, 1))


@dataclass(slots=True)
class _Churn(Condition):
    expected: bool

    def evaluate(self, mention: Mention) -> Evidence | None:
        if bool(mention.churn) != self.expected:
            return None
        if not self.expected:
            return ["no churn threat"]
        phrases = mention.evidence.get("churn") or []
        return [
            f"threatens to leave: {'; '.join(repr(p) for p in phrases)}" if phrases else "threatens to leave"
        ]


@condition("churn")
def _churn(argument: Any, path: str, file: str) -> Condition:
    if not isinstance(argument, bool):
        raise ConfigError("expected true or false", file=file, path=path)
    return _Churn(argument)


def _flag(name: str, label: str, attribute: Callable[[Mention], bool | None]) -> None:
    def compile_flag(argument: Any, path: str, file: str) -> Condition:
        if not isinstance(argument, bool):
            raise ConfigError("expected true or false", file=file, path=path)
        return _Field(label if argument else f"not {label}", lambda m: bool(attribute(m)) == argument)

    REGISTRY[name] = compile_flag


_flag("author_is_brand", "author is the brand", lambda m: m.author_is_brand)


def _membership(name: str, label: str, attribute: Callable[[Mention], str | None]) -> None:
    def compile_membership(argument: Any, path: str, file: str) -> Condition:
        values = {v.lower() for v in _strings(argument, path, file)}
        return _Field(
            label, lambda m: (attribute(m) or "") if (attribute(m) or "").lower() in values else None
        )

    REGISTRY[name] = compile_membership


_membership("lang_in", "language {value}", lambda m: m.lang)
_membership("source_in", "source {value}", lambda m: m.source)
_membership("brand_in", "brand {value}", lambda m: m.brand)


@dataclass(slots=True)
class _All(Condition):
    parts: list[Condition]

    def evaluate(self, mention: Mention) -> Evidence | None:
        evidence: Evidence = []
        for part in self.parts:
            found = part.evaluate(mention)
            if found is None:
                return None
            evidence.extend(found)
        return evidence


@dataclass(slots=True)
class _Any(Condition):
    parts: list[Condition]

    def evaluate(self, mention: Mention) -> Evidence | None:
        evidence: Evidence = []
        matched = False
        for part in self.parts:
            found = part.evaluate(mention)
            if found is not None:
                matched = True
                evidence.extend(found)
        return evidence if matched else None


@dataclass(slots=True)
class _Not(Condition):
    part: Condition

    def evaluate(self, mention: Mention) -> Evidence | None:
        return [] if self.part.evaluate(mention) is None else None


def _group(kind: type[_All] | type[_Any]) -> Compiler:
    def compile_group(argument: Any, path: str, file: str) -> Condition:
        if not isinstance(argument, list) or not argument:
            raise ConfigError("expected a non-empty list of conditions", file=file, path=path)
        return kind([compile_condition(part, f"{path}[{i}]", file) for i, part in enumerate(argument)])

    return compile_group


REGISTRY["all"] = _group(_All)
REGISTRY["any"] = _group(_Any)
REGISTRY["not"] = lambda argument, path, file: _Not(compile_condition(argument, path, file))
