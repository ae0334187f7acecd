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
from operator import attrgetter
from typing import Any, Protocol

import ahocorasick

from monitor.analysis.text import fold
from monitor.confbase import format_duration, parse_duration
from monitor.errors import ConfigError
from monitor.mention import Mention

Evidence = list[str]
Found = tuple[str, ...]  # evidence lines as tests return them: immutable, shared between rules
Trigger = int | tuple[str, float]  # a keyword id, or ("complaint" | "sentiment", threshold)
Hit = tuple[int, int, bool]  # start, end in the normalized text; True when a whole word ends there

# Inside a phrase, spaces, hyphens, underscores and apostrophes are interchangeable.
_SEPARATOR_CHARS = "-_'" + "".join(chr(c) for c in range(0x3100) if chr(c).isspace())
_SEPARATORS = str.maketrans(dict.fromkeys(_SEPARATOR_CHARS, " "))
_RUNS = re.compile(r" {2,}")
# The same mapping for a mention's text, where speed counts: ASCII text (most posts) through a
# byte table, 5x faster than str.translate; other text by one regex over the runs that change.
_ASCII_SEPARATORS = bytes(32 if b < 128 and chr(b) in _SEPARATOR_CHARS else b for b in range(256))
_ANY_SEPARATOR = "[" + "".join(re.escape(c) for c in _SEPARATOR_CHARS) + "]"
_CHANGED_RUNS = re.compile(  # every run of separators but a lone space
    "["
    + "".join(re.escape(c) for c in _SEPARATOR_CHARS if c != " ")
    + f"]{_ANY_SEPARATOR}*| {_ANY_SEPARATOR}+"
)
_LONG_RUNS = re.compile(f"{_ANY_SEPARATOR}{{2,}}")
_PLURAL = "(?:s|x|es)?"


def normalize_term(term: str) -> str:
    """What a word or phrase is matched as: folded, separators as single spaces."""
    return " ".join(fold(term).translate(_SEPARATORS).split())


def _normalize(folded: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Folded text with separators as single spaces (what the automaton scans), and where runs of
    separators were collapsed: (offset in the result, characters dropped before it)."""
    if folded.isascii():
        normalized = folded.encode("ascii").translate(_ASCII_SEPARATORS).decode("ascii")
        if "  " not in normalized:
            return normalized, ()
        normalized = _RUNS.sub(" ", normalized)
    else:
        normalized = _CHANGED_RUNS.sub(" ", folded)
        if len(normalized) == len(folded):
            return normalized, ()
    shifts = []
    shift = 0
    for run in _LONG_RUNS.finditer(folded):
        shift += run.end() - run.start() - 1
        shifts.append((run.end() - shift, shift))
    return normalized, tuple(shifts)


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
    """One mention under evaluation, with what is computed once for all rules (folded text, hits,
    evidence lines several rules quote)."""

    __slots__ = (
        "_folded",
        "_hits",
        "_index",
        "_memo",
        "_normalized",
        "_quoted",
        "_shifts",
        "context",
        "mention",
    )

    # Set when first needed (`folded`, `hits`): most mentions fire no keyword rule.
    _quoted: str
    _normalized: str
    _shifts: tuple[tuple[int, int], ...]
    _hits: dict[int, list[Hit]]

    def __init__(self, mention: Mention, context: RuleContext | None = None) -> None:
        self.mention = mention
        self.context = context
        self._folded: str | None = None
        self._index: KeywordIndex | None = None
        self._memo: dict[object, Found] = {}  # evidence lines rules share: score notes, quoted words

    def score_note(self, kind: str) -> Found:
        """`complaint score 0.91 (words…)` / `sentiment -0.72 (…)`: built once, whatever the number of
        rules that quote it."""
        note = self._memo.get(kind)
        if note is None:
            mention = self.mention
            label = (
                f"complaint score {mention.complaint_score:.2f}"
                if kind == "complaint"
                else f"sentiment {mention.sentiment:+.2f}"
            )
            found = mention.evidence.get(kind)
            note = self._memo[kind] = (f"{label} ({', '.join(found)})" if found else label,)
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
            self._normalized, self._shifts = _normalize(folded)
        return self._folded

    def hits(self, index: KeywordIndex) -> dict[int, list[Hit]]:
        if self._index is not index:
            self.folded  # noqa: B018 - computes the normalized text
            if self._index is not None:
                self._memo = {}  # quoted words are keyed by the other index's key ids
            self._hits, self._index = index.scan(self._normalized), index
        return self._hits

    def words(self, key: object, label: str, every: bool, kids: tuple[int, ...]) -> Found | None:
        """`words: panne, résilier`, quoting the whole-word hits of `kids` (found by `hits`); with
        `every`, None unless each of them has one.

        Rules sharing a word ask for the same line under the same `key`: it is quoted once per
        mention."""
        found = self._memo.get(key)
        if found is None:
            hits = self._hits
            spans: list[tuple[int, int]] = []
            for kid in kids:
                whole = [(start, end) for start, end, whole in hits[kid] if whole]
                if not whole and every:
                    return None
                spans += whole
            if not spans:
                return None
            found = self._memo[key] = (f"{label}: {', '.join(self.quote(spans))}",)
        return found

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


Test = Callable[[Subject], Found | None]


class Condition:
    """A compiled condition: one test per mention, and the triggers of which one must hold.

    `test` returns the evidence lines as a tuple (rules and combinators share it without
    copying: every line is non-empty) or None when the condition does not match. Compilers
    build it as a closure over their arguments, so evaluating a rule is a few plain calls.
    """

    __slots__ = ("_required", "test")

    def __init__(self, test: Test, required: frozenset[Trigger] | None = None) -> None:
        self.test = test
        self._required = required

    def evaluate(self, subject: Subject) -> Evidence | None:
        found = self.test(subject)
        return None if found is None else list(found)

    def required(self) -> frozenset[Trigger] | None:
        """Triggers of which at least one must hold for a match (None: no cheap test is necessary).

        A trigger is a keyword id (hit by the automaton), `("complaint", t)` (complaint score >= t)
        or `("sentiment", t)` (sentiment <= t). The rule set indexes rules by them, so a mention
        only evaluates the rules it could fire.
        """
        return self._required

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


def _keywords(index: KeywordIndex, ids: tuple[int, ...], every: bool, label: str = "words") -> Condition:
    """A test that looks the condition's keys up among the mention's hits (the automaton ran once).

    Its line is memoized per mention under a key naming what it quotes: the keys hit alone for
    `words_any` (a tuple of ints), with the label and `every` otherwise."""
    test: Test
    key: object
    if every:
        key = (label, every, ids)

        def test(subject: Subject) -> Found | None:
            hits = subject.hits(index)
            for kid in ids:
                if kid not in hits:
                    return None
            return subject.words(key, label, every, ids)

    elif len(ids) == 1:
        (only,) = ids
        key = ids if label == "words" else (label, every, ids)

        def test(subject: Subject) -> Found | None:
            return subject.words(key, label, every, ids) if only in subject.hits(index) else None

    else:
        id_set, count = frozenset(ids), len(ids)

        def test(subject: Subject) -> Found | None:
            hits = subject.hits(index)
            kids: tuple[int, ...] = ()
            # Few hits, many words: look the hits up, not the words (cost independent of the list).
            if len(hits) < count:
                for kid in hits:
                    if kid in id_set:
                        kids += (kid,)
            else:
                for kid in ids:
                    if kid in hits:
                        kids += (kid,)
            return subject.words(kids, label, every, kids) if kids else None

    return Condition(test, frozenset(ids))


def _words(argument: Any, where: Where, every: bool) -> Condition:
    keys = [_key(w, where) for w in _strings(argument, where)]
    ids = tuple(dict.fromkeys(where.keywords.add(k) for k in keys))
    return _keywords(where.keywords, ids, every)


@condition("words_any")
def _words_any(argument: Any, where: Where) -> Condition:
    return _words(argument, where, every=False)


@condition("words_all")
def _words_all(argument: Any, where: Where) -> Condition:
    return _words(argument, where, every=True)


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
    index = where.keywords
    if not plurals:
        return _keywords(index, (index.add(key),), every=False, label="phrase")
    # Words that may each take s, x or es: the longest word as a keyword trigger, then one regex.
    words = key.split()
    trigger = index.add(max(words, key=len), prefix=True)
    body = r"[\s\-_']+".join(re.escape(w) + _PLURAL for w in words)
    pattern = re.compile(rf"(?<!\w){body}(?!\w)")

    def test(subject: Subject) -> Found | None:
        if trigger not in subject.hits(index):
            return None
        spans = [m.span() for m in pattern.finditer(subject.folded)]
        return (f"phrase: {', '.join(subject.quote(spans, normalized=False))}",) if spans else None

    return Condition(test, frozenset((trigger,)))


@condition("regex")
def _regex(argument: Any, where: Where) -> Condition:
    if not isinstance(argument, str):
        raise where.error("expected a regular expression string")
    try:
        pattern = re.compile(argument, re.IGNORECASE)
    except re.error as exc:
        raise where.error(f"invalid regular expression: {exc}") from None

    def test(subject: Subject) -> Found | None:
        mention = subject.mention
        match = pattern.search(f"{mention.title}\n{mention.text}" if mention.title else mention.text)
        return (f"pattern matched: {match.group(0)!r}",) if match else None

    return Condition(test)


@condition("complaint_score_at_least")
def _complaint_at_least(argument: Any, where: Where) -> Condition:
    threshold = _number(argument, where, 0, 1)

    def test(subject: Subject) -> Found | None:
        score = subject.mention.complaint_score
        if score is None or score < threshold:
            return None
        return subject._memo.get("complaint") or subject.score_note("complaint")

    return Condition(test, frozenset({("complaint", threshold)}))


@condition("sentiment_at_most")
def _sentiment_at_most(argument: Any, where: Where) -> Condition:
    threshold = _number(argument, where, -1, 1)

    def test(subject: Subject) -> Found | None:
        score = subject.mention.sentiment
        if score is None or score > threshold:
            return None
        return subject._memo.get("sentiment") or subject.score_note("sentiment")

    return Condition(test, frozenset({("sentiment", threshold)}))


@condition("churn")
def _churn(argument: Any, where: Where) -> Condition:
    if not isinstance(argument, bool):
        raise where.error("expected true or false")
    test: Test
    if not argument:
        calm: Found = ("no churn threat",)

        def test(subject: Subject) -> Found | None:
            return None if subject.mention.churn else calm

    else:

        def test(subject: Subject) -> Found | None:
            mention = subject.mention
            if not mention.churn:
                return None
            phrases = mention.evidence.get("churn") or []
            return (
                f"threatens to leave: {'; '.join(repr(p) for p in phrases)}"
                if phrases
                else "threatens to leave",
            )

    return Condition(test)


@condition("author_followers_at_least")
def _followers_at_least(argument: Any, where: Where) -> Condition:
    if isinstance(argument, bool) or not isinstance(argument, int) or argument < 0:
        raise where.error("expected a whole number of followers (0 or more)")
    threshold = argument

    def test(subject: Subject) -> Found | None:
        followers = subject.mention.author_followers
        if followers is None or followers < threshold:
            return None
        return (f"author has {followers:,} followers",)

    return Condition(test)


@condition("author_mentions_within")
def _author_mentions_within(argument: Any, where: Where) -> Condition:
    options = _mapping(argument, where, {"count", "within"}, set())
    count = _count(options["count"], where.at(".count"))
    try:
        within = parse_duration(options["within"])
    except ValueError as exc:
        raise where.at(".within").error(str(exc)) from None

    def test(subject: Subject) -> Found | None:
        context = subject.context
        found = context.author_mentions(subject.mention, within) if context is not None else 1
        if found < count:
            return None
        return (f"{found} mentions by this author within {format_duration(within)}",)

    return Condition(test)


def _flag(name: str, label: str, attribute: Callable[[Mention], bool | None]) -> None:
    def compile_flag(argument: Any, where: Where) -> Condition:
        if not isinstance(argument, bool):
            raise where.error("expected true or false")
        found: Found = (label if argument else f"not {label}",)

        def test(subject: Subject) -> Found | None:
            return found if bool(attribute(subject.mention)) == argument else None

        return Condition(test)

    REGISTRY[name] = compile_flag


_flag("author_is_brand", "author is the brand", attrgetter("author_is_brand"))


def _membership(name: str, label: str, attribute: Callable[[Mention], str | None]) -> None:
    def compile_membership(argument: Any, where: Where) -> Condition:
        values = {v.lower() for v in _strings(argument, where)}
        lines: dict[str, Found] = {}  # per value as the mention spells it ("fr", "FR"): a handful

        def test(subject: Subject) -> Found | None:
            value = attribute(subject.mention) or ""
            if value.lower() not in values:
                return None
            found = lines.get(value)
            if found is None:
                found = (label.format(value=value),)
                if len(lines) < 64:
                    lines[value] = found
            return found

        return Condition(test)

    REGISTRY[name] = compile_membership


_membership("lang_in", "language {value}", attrgetter("lang"))
_membership("source_in", "source {value}", attrgetter("source"))
_membership("brand_in", "brand {value}", attrgetter("brand"))


def _all(parts: list[Condition]) -> Condition:
    """Every part matches; their evidence in order. Stops at the first part that does not."""
    # Any part's triggers are necessary; keywords are the most selective, then the fewest.
    needed = [r for r in (part.required() for part in parts) if r is not None]
    required = min(needed, key=lambda r: (not all(isinstance(t, int) for t in r), len(r))) if needed else None
    tests = [part.test for part in parts]
    test: Test
    if len(tests) == 1:
        test = tests[0]
    elif len(tests) == 2:
        first, second = tests

        def test(subject: Subject) -> Found | None:
            found = first(subject)
            if found is None:
                return None
            more = second(subject)
            return None if more is None else found + more

    else:

        def test(subject: Subject) -> Found | None:
            found: Found = ()
            for part in tests:
                more = part(subject)
                if more is None:
                    return None
                found += more
            return found

    return Condition(test, required)


def _any(parts: list[Condition]) -> Condition:
    """At least one part matches; the evidence of every part that does."""
    required: frozenset[Trigger] | None = frozenset()
    for part in parts:
        triggers = part.required()
        if triggers is None or required is None:
            required = None
            break
        required |= triggers
    tests = [part.test for part in parts]
    test: Test
    if len(tests) == 1:
        test = tests[0]
    elif len(tests) == 2:
        first, second = tests

        def test(subject: Subject) -> Found | None:
            found, more = first(subject), second(subject)
            if found is None:
                return more
            return found if more is None else found + more

    else:

        def test(subject: Subject) -> Found | None:
            found: Found | None = None
            for part in tests:
                more = part(subject)
                if more is not None:
                    found = more if found is None else found + more
            return found

    return Condition(test, required)


def _not(argument: Any, where: Where) -> Condition:
    part = _compile(argument, where).test

    def test(subject: Subject) -> Found | None:
        return () if part(subject) is None else None

    return Condition(test)


def _group(combine: Callable[[list[Condition]], Condition]) -> Compiler:
    def compile_group(argument: Any, where: Where) -> Condition:
        if not isinstance(argument, list) or not argument:
            raise where.error("expected a non-empty list of conditions")
        return combine([_compile(part, where.at(f"[{i}]")) for i, part in enumerate(argument)])

    return compile_group


REGISTRY["all"] = _group(_all)
REGISTRY["any"] = _group(_any)
REGISTRY["not"] = _not
