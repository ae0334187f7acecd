"""The one registry of rule conditions.

A condition is compiled once from its config value and then evaluated per mention. Evaluation
returns the evidence a support agent reads ("words: résilier") or None when it does not match.

Keyword conditions (`words_any`, `words_all`, `phrase`) do not scan the text themselves: when
compiled they add their words to a `KeywordIndex` shared by the whole rule set, one Aho-Corasick
automaton over the folded text, run once per mention; each condition then looks its words up
among the hits. The cost per mention barely grows with the number of keywords.

Conditions that need more than the mention (`author_mentions_within`: a count in the database)
ask a read-only `RuleContext` the caller passes in; without one they see only the mention.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Protocol

import ahocorasick

from monitor.analysis.text import fold
from monitor.confbase import format_duration, parse_duration
from monitor.errors import ConfigError
from monitor.mention import Mention

Evidence = list[str]
Trigger = int | tuple[str, float]  # a keyword id, or ("complaint" | "sentiment", threshold)
Hit = tuple[int, int, bool]  # start, end in the normalized text; True when a whole word ends there

# Inside a phrase, spaces, hyphens, underscores and apostrophes are interchangeable.
_SEPARATOR_CHARS = "-_'" + "".join(chr(c) for c in range(0x3100) if chr(c).isspace())
_SEPARATORS = str.maketrans(dict.fromkeys(_SEPARATOR_CHARS, " "))
_RUNS = re.compile(r" {2,}")
_PLURAL = "(?:s|x|es)?"


def normalize_term(term: str) -> str:
    """What a word or phrase is matched as: folded, separators as single spaces."""
    return " ".join(fold(term).translate(_SEPARATORS).split())


class RuleContext(Protocol):
    """Read-only facts from outside the mention (the database), for the conditions that need them."""

    def author_mentions(self, mention: Mention, within: timedelta) -> int:
        """Mentions of the same brand by the mention's author in the `within` before it, itself included."""


class KeywordIndex:
    """Every word and phrase of a rule set in one Aho-Corasick automaton over normalized text."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._lengths: list[int] = []
        self._prefix: list[bool] = []  # a hit followed by more letters counts (plural triggers)
        self._automaton: Any = None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: str, *, prefix: bool = False) -> int:
        """The id of a normalized key (one id per distinct key, whichever conditions use it)."""
        kid = self._ids.get(key)
        if kid is None:
            kid = self._ids[key] = len(self._lengths)
            self._lengths.append(len(key))
            self._prefix.append(False)
            self._automaton = None
        if prefix:
            self._prefix[kid] = True
        return kid

    def prepare(self) -> None:
        """Build the automaton now (a rule set does, so threads sharing it never build it)."""
        if self._ids and self._automaton is None:
            self._build()

    def _build(self) -> Any:
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for key, kid in self._ids.items():
            automaton.add_word(key, kid)
        automaton.make_automaton()
        self._automaton = automaton
        return automaton

    def scan(self, text: str) -> dict[int, list[Hit]]:
        """Key id -> its hits in `text` that start on a word boundary (one pass, whatever the key count)."""
        if not self._ids:
            return {}
        automaton = self._automaton or self._build()
        hits: dict[int, list[Hit]] = {}
        last = len(text) - 1
        lengths, prefix = self._lengths, self._prefix
        for end, kid in automaton.iter(text):
            start = end + 1 - lengths[kid]
            if start and text[start - 1].isalnum():
                continue
            whole = end == last or not text[end + 1].isalnum()
            if whole or prefix[kid]:
                hits.setdefault(kid, []).append((start, end + 1, whole))
        return hits


class Subject:
    """One mention under evaluation, with what is computed once for all rules (folded text, hits)."""

    __slots__ = (
        "_folded",
        "_hits",
        "_index",
        "_normalized",
        "_notes",
        "_quoted",
        "_shifts",
        "context",
        "mention",
    )

    def __init__(self, mention: Mention, context: RuleContext | None = None) -> None:
        self.mention = mention
        self.context = context
        self._folded: str | None = None
        self._quoted = ""
        self._normalized = ""
        self._shifts: list[tuple[int, int]] = []
        self._index: KeywordIndex | None = None
        self._hits: dict[int, list[Hit]] = {}
        self._notes: dict[str, str] = {}

    def score_note(self, kind: str) -> str:
        """`complaint score 0.91 (words…)` / `sentiment -0.72 (…)`: one string, whatever the number of
        rules that quote it."""
        note = self._notes.get(kind)
        if note is None:
            mention = self.mention
            label = (
                f"complaint score {mention.complaint_score:.2f}"
                if kind == "complaint"
                else f"sentiment {mention.sentiment:+.2f}"
            )
            found = mention.evidence.get(kind)
            note = self._notes[kind] = f"{label} ({', '.join(found)})" if found else label
        return note

    @property
    def folded(self) -> str:
        """Title and text, case- and accent-folded (what keyword conditions match on)."""
        if self._folded is None:
            mention = self.mention
            original = f"{mention.title}\n{mention.text}" if mention.title else (mention.text or "")
            folded = fold(original)
            # Quote from the original when folding kept every offset; else from the folded text.
            self._folded, self._quoted = folded, original if len(folded) == len(original) else folded
            normalized = folded.translate(_SEPARATORS)
            if "  " in normalized:
                shift = 0
                for run in _RUNS.finditer(normalized):
                    shift += run.end() - run.start() - 1
                    self._shifts.append((run.end() - shift, shift))
                normalized = _RUNS.sub(" ", normalized)
            self._normalized = normalized
        return self._folded

    def hits(self, index: KeywordIndex) -> dict[int, list[Hit]]:
        if self._index is not index:
            self.folded  # noqa: B018 - computes the normalized text
            self._hits, self._index = index.scan(self._normalized), index
        return self._hits

    def _unshift(self, position: int) -> int:
        """A normalized-text offset back to the folded text (runs of separators were collapsed)."""
        if not self._shifts:
            return position
        i = bisect.bisect_right(self._shifts, (position, len(self._folded or "")))
        return position + (self._shifts[i - 1][1] if i else 0)

    def quote(self, spans: Iterable[tuple[int, int]], *, normalized: bool = True) -> list[str]:
        """The post's own words at these spans, sorted, without spans inside another one."""
        self.folded  # noqa: B018
        unique = sorted(set(spans), key=lambda s: (s[0], -s[1]))
        kept: list[tuple[int, int]] = []
        for start, end in unique:
            if kept and start >= kept[-1][0] and end <= kept[-1][1]:
                continue
            kept.append((start, end))
        if normalized:
            kept = [(self._unshift(start), self._unshift(end - 1) + 1) for start, end in kept]
        return sorted({self._quoted[start:end] for start, end in kept})


class Condition:
    def evaluate(self, subject: Subject) -> Evidence | None:  # pragma: no cover - interface
        raise NotImplementedError

    def required(self) -> frozenset[Trigger] | None:
        """Triggers of which at least one must hold for a match (None: no cheap test is necessary).

        A trigger is a keyword id (hit by the automaton), `("complaint", t)` (complaint score >= t)
        or `("sentiment", t)` (sentiment <= t). The rule set indexes rules by them, so a mention
        only evaluates the rules it could fire.
        """
        return None

    def check(self, mention: Mention, context: RuleContext | None = None) -> Evidence | None:
        """Evaluate on one mention (convenience for tools and tests)."""
        return self.evaluate(Subject(mention, context))


@dataclass(frozen=True, slots=True)
class Where:
    """Where a condition is in the config, and the rule set's keyword index it adds its words to."""

    path: str
    file: str
    keywords: KeywordIndex

    def at(self, suffix: str) -> Where:
        return replace(self, path=f"{self.path}{suffix}")

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, path=self.path)


Compiler = Callable[[Any, Where], Condition]
REGISTRY: dict[str, Compiler] = {}


def condition(name: str) -> Callable[[Compiler], Compiler]:
    def register(compiler: Compiler) -> Compiler:
        REGISTRY[name] = compiler
        return compiler

    return register


def compile_condition(
    tree: Any, path: str, file: str = "<config>", *, keywords: KeywordIndex | None = None
) -> Condition:
    """Compile a `{name: argument}` mapping (or a list, meaning `all`) into a Condition.

    Rules compiled with the same `keywords` index share one automaton; without one, the
    condition gets an index of its own.
    """
    return _compile(tree, Where(path, file, keywords if keywords is not None else KeywordIndex()))


def _compile(tree: Any, where: Where) -> Condition:
    if isinstance(tree, list):
        return _compile({"all": tree}, where)
    if not isinstance(tree, dict) or len(tree) != 1:
        raise where.error("expected exactly one condition as `{name: value}` (combine several with all/any)")
    ((name, argument),) = tree.items()
    if name not in REGISTRY:
        raise where.error(f"unknown condition {name!r}; known conditions: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](argument, where.at(f".{name}"))


def validate_condition(tree: Any, path: str, file: str = "<config>") -> None:
    compile_condition(tree, path, file)


def _strings(argument: Any, where: Where) -> list[str]:
    if isinstance(argument, str):
        argument = [argument]
    if (
        not isinstance(argument, list)
        or not argument
        or not all(isinstance(w, str) and w.strip() for w in argument)
    ):
        raise where.error("expected a non-empty list of words or phrases")
    return argument


def _number(argument: Any, where: Where, low: float, high: float) -> float:
    if isinstance(argument, bool) or not isinstance(argument, int | float) or not low <= argument <= high:
        raise where.error(f"expected a number between {low:g} and {high:g}")
    return float(argument)


def _count(argument: Any, where: Where) -> int:
    if isinstance(argument, bool) or not isinstance(argument, int) or argument < 1:
        raise where.error("expected a whole number of at least 1")
    return argument


def _key(term: str, where: Where) -> str:
    key = normalize_term(term)
    if not any(ch.isalnum() for ch in key):
        raise where.error(f"{term!r} has no letter or digit to match")
    return key


def _mapping(argument: Any, where: Where, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(argument, dict):
        raise where.error(f"expected a mapping with {', '.join(sorted(required))}")
    unknown = set(argument) - required - optional
    if unknown:
        known = ", ".join(sorted(required | optional))
        raise where.at(f".{sorted(map(str, unknown))[0]}").error(f"unknown key; expected {known}")
    missing = sorted(required - set(argument))
    if missing:
        raise where.at(f".{missing[0]}").error("required key is missing")
    return argument


@dataclass(slots=True)
class _Words(Condition):
    index: KeywordIndex
    ids: tuple[int, ...]
    every: bool  # words_all
    label: str = "words"
    id_set: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self.id_set = frozenset(self.ids)

    def evaluate(self, subject: Subject) -> Evidence | None:
        hits = subject.hits(self.index)
        if len(hits) < len(self.ids):
            if self.every:
                return None
            # Few hits, many words: look the hits up, not the words (cost independent of the list).
            chosen: Iterable[int] = [kid for kid in hits if kid in self.id_set]
        else:
            chosen = self.ids
        spans: list[tuple[int, int]] = []
        for kid in chosen:
            found = [(start, end) for start, end, whole in hits.get(kid, ()) if whole]
            if not found and self.every:
                return None
            spans.extend(found)
        if not spans:
            return None
        return [f"{self.label}: {', '.join(subject.quote(spans))}"]

    def required(self) -> frozenset[Trigger] | None:
        return frozenset(self.ids)


def _words(argument: Any, where: Where, every: bool) -> Condition:
    keys = [_key(w, where) for w in _strings(argument, where)]
    ids = tuple(dict.fromkeys(where.keywords.add(k) for k in keys))
    return _Words(where.keywords, ids, every)


@condition("words_any")
def _words_any(argument: Any, where: Where) -> Condition:
    return _words(argument, where, every=False)


@condition("words_all")
def _words_all(argument: Any, where: Where) -> Condition:
    return _words(argument, where, every=True)


@dataclass(slots=True)
class _PluralPhrase(Condition):
    """A phrase whose words may each take s, x or es: a keyword trigger, then one regex."""

    index: KeywordIndex
    trigger: int
    pattern: re.Pattern[str]

    def evaluate(self, subject: Subject) -> Evidence | None:
        if self.trigger not in subject.hits(self.index):
            return None
        spans = [m.span() for m in self.pattern.finditer(subject.folded)]
        return [f"phrase: {', '.join(subject.quote(spans, normalized=False))}"] if spans else None

    def required(self) -> frozenset[Trigger] | None:
        return frozenset((self.trigger,))


@condition("phrase")
def _phrase(argument: Any, where: Where) -> Condition:
    plurals = False
    if isinstance(argument, dict):
        options = _mapping(argument, where, {"text"}, {"plurals"})
        argument, plurals = options["text"], options.get("plurals", False)
        if not isinstance(plurals, bool):
            raise where.at(".plurals").error("expected true or false")
        where = where.at(".text")
    if not isinstance(argument, str) or not argument.strip():
        raise where.error('expected a phrase: a string, or {text: "...", plurals: true}')
    key = _key(argument, where)
    if not plurals:
        return _Words(where.keywords, (where.keywords.add(key),), every=False, label="phrase")
    words = key.split()
    trigger = where.keywords.add(max(words, key=len), prefix=True)
    body = r"[\s\-_']+".join(re.escape(w) + _PLURAL for w in words)
    return _PluralPhrase(where.keywords, trigger, re.compile(rf"(?<!\w){body}(?!\w)"))


@dataclass(slots=True)
class _Regex(Condition):
    pattern: re.Pattern[str]

    def evaluate(self, subject: Subject) -> Evidence | None:
        mention = subject.mention
        match = self.pattern.search(f"{mention.title}\n{mention.text}" if mention.title else mention.text)
        return [f"pattern matched: {match.group(0)!r}"] if match else None


@condition("regex")
def _regex(argument: Any, where: Where) -> Condition:
    if not isinstance(argument, str):
        raise where.error("expected a regular expression string")
    try:
        return _Regex(re.compile(argument, re.IGNORECASE))
    except re.error as exc:
        raise where.error(f"invalid regular expression: {exc}") from None


@dataclass(slots=True)
class _Field(Condition):
    label: str
    test: Callable[[Mention], Any]

    def evaluate(self, subject: Subject) -> Evidence | None:
        value = self.test(subject.mention)
        return [self.label.format(value=value)] if value is not None and value is not False else None


@dataclass(slots=True)
class _Complaint(Condition):
    threshold: float

    def evaluate(self, subject: Subject) -> Evidence | None:
        score = subject.mention.complaint_score
        if score is None or score < self.threshold:
            return None
        return [subject.score_note("complaint")]

    def required(self) -> frozenset[Trigger] | None:
        return frozenset({("complaint", self.threshold)})


@condition("complaint_score_at_least")
def _complaint_at_least(argument: Any, where: Where) -> Condition:
    return _Complaint(_number(argument, where, 0, 1))


@dataclass(slots=True)
class _Sentiment(Condition):
    threshold: float

    def evaluate(self, subject: Subject) -> Evidence | None:
        score = subject.mention.sentiment
        if score is None or score > self.threshold:
            return None
        return [subject.score_note("sentiment")]

    def required(self) -> frozenset[Trigger] | None:
        return frozenset({("sentiment", self.threshold)})


@condition("sentiment_at_most")
def _sentiment_at_most(argument: Any, where: Where) -> Condition:
    return _Sentiment(_number(argument, where, -1, 1))


@dataclass(slots=True)
class _Churn(Condition):
    expected: bool

    def evaluate(self, subject: Subject) -> Evidence | None:
        mention = subject.mention
        if bool(mention.churn) != self.expected:
            return None
        if not self.expected:
            return ["no churn threat"]
        phrases = mention.evidence.get("churn") or []
        return [
            f"threatens to leave: {'; '.join(repr(p) for p in phrases)}" if phrases else "threatens to leave"
        ]


@condition("churn")
def _churn(argument: Any, where: Where) -> Condition:
    if not isinstance(argument, bool):
        raise where.error("expected true or false")
    return _Churn(argument)


@dataclass(slots=True)
class _Followers(Condition):
    threshold: int

    def evaluate(self, subject: Subject) -> Evidence | None:
        followers = subject.mention.author_followers
        if followers is None or followers < self.threshold:
            return None
        return [f"author has {followers:,} followers"]


@condition("author_followers_at_least")
def _followers_at_least(argument: Any, where: Where) -> Condition:
    if isinstance(argument, bool) or not isinstance(argument, int) or argument < 0:
        raise where.error("expected a whole number of followers (0 or more)")
    return _Followers(argument)


@dataclass(slots=True)
class _AuthorMentions(Condition):
    count: int
    within: timedelta

    def evaluate(self, subject: Subject) -> Evidence | None:
        context = subject.context
        found = context.author_mentions(subject.mention, self.within) if context is not None else 1
        if found < self.count:
            return None
        return [f"{found} mentions by this author within {format_duration(self.within)}"]


@condition("author_mentions_within")
def _author_mentions_within(argument: Any, where: Where) -> Condition:
    options = _mapping(argument, where, {"count", "within"}, set())
    count = _count(options["count"], where.at(".count"))
    try:
        within = parse_duration(options["within"])
    except ValueError as exc:
        raise where.at(".within").error(str(exc)) from None
    return _AuthorMentions(count, within)


def _flag(name: str, label: str, attribute: Callable[[Mention], bool | None]) -> None:
    def compile_flag(argument: Any, where: Where) -> Condition:
        if not isinstance(argument, bool):
            raise where.error("expected true or false")
        return _Field(label if argument else f"not {label}", lambda m: bool(attribute(m)) == argument)

    REGISTRY[name] = compile_flag


_flag("author_is_brand", "author is the brand", lambda m: m.author_is_brand)


def _membership(name: str, label: str, attribute: Callable[[Mention], str | None]) -> None:
    def compile_membership(argument: Any, where: Where) -> Condition:
        values = {v.lower() for v in _strings(argument, where)}
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

    def evaluate(self, subject: Subject) -> Evidence | None:
        evidence: Evidence = []
        for part in self.parts:
            found = part.evaluate(subject)
            if found is None:
                return None
            evidence.extend(found)
        return evidence

    def required(self) -> frozenset[Trigger] | None:
        # Any part's triggers are necessary; keywords are the most selective, then the fewest.
        needed = [r for r in (part.required() for part in self.parts) if r is not None]
        return min(needed, key=lambda r: (not all(isinstance(t, int) for t in r), len(r))) if needed else None


@dataclass(slots=True)
class _Any(Condition):
    parts: list[Condition]

    def evaluate(self, subject: Subject) -> Evidence | None:
        evidence: Evidence = []
        matched = False
        for part in self.parts:
            found = part.evaluate(subject)
            if found is not None:
                matched = True
                evidence.extend(found)
        return evidence if matched else None

    def required(self) -> frozenset[Trigger] | None:
        needed: set[Trigger] = set()
        for part in self.parts:
            required = part.required()
            if required is None:
                return None
            needed |= required
        return frozenset(needed)


@dataclass(slots=True)
class _Not(Condition):
    part: Condition

    def evaluate(self, subject: Subject) -> Evidence | None:
        return [] if self.part.evaluate(subject) is None else None


def _group(kind: type[_All] | type[_Any]) -> Compiler:
    def compile_group(argument: Any, where: Where) -> Condition:
        if not isinstance(argument, list) or not argument:
            raise where.error("expected a non-empty list of conditions")
        return kind([_compile(part, where.at(f"[{i}]")) for i, part in enumerate(argument)])

    return compile_group


REGISTRY["all"] = _group(_All)
REGISTRY["any"] = _group(_Any)
REGISTRY["not"] = lambda argument, where: _Not(_compile(argument, where))
