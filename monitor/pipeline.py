"""`ingest`: the one path every mention takes, whatever source it came from.

normalize -> brand match -> (skip already stored) -> enrich -> store -> rules -> case -> outbox,
and the source's cursor is saved in the same transaction as the mentions it covers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from monitor.alerts.outbox import flag_alerts, insert_alerts
from monitor.analysis.brands import BrandMatcher
from monitor.analysis.enrich import Analyzer
from monitor.analysis.text import clean_whitespace
from monitor.cases import CaseBatch
from monitor.confbase import format_duration
from monitor.config import Settings
from monitor.mention import Mention
from monitor.rules.context import DatabaseContext
from monitor.rules.engine import FlagDraft, RuleSet
from monitor.storage import queries, state

if TYPE_CHECKING:
    from monitor.sources.base import Batch

MAX_TEXT = 100_000
_TEXT_FIELDS = (
    "external_id",
    "text",
    "url",
    "title",
    "author_id",
    "author_name",
    "author_handle",
    "lang",
    "conversation_id",
)
Enricher = Callable[[list[Mention]], list[Mention]]


def pass_through(mentions: list[Mention]) -> list[Mention]:
    """An enricher that changes nothing (for tools that need raw mentions)."""
    return mentions


@dataclass(slots=True)
class IngestResult:
    received: int = 0
    unmatched: int = 0
    duplicates: int = 0
    stored: int = 0
    flags: int = 0
    cases_opened: int = 0
    alerts_queued: int = 0

    def add(self, other: IngestResult) -> None:
        for counter in fields(self):
            setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))


def normalize(mention: Mention, now: datetime) -> Mention:
    """Clean text and identity; every timestamp becomes timezone-aware UTC.

    NUL characters are dropped from every text field: PostgreSQL refuses them, and one hostile
    post would otherwise fail its whole batch on every retry, stalling the source.
    """
    for name in _TEXT_FIELDS:
        value = getattr(mention, name)
        if value and "\x00" in value:
            setattr(mention, name, value.replace("\x00", ""))
    mention.external_id = _fit_id(mention.external_id.strip(), 512)
    if mention.author_id:
        mention.author_id = _fit_id(mention.author_id, 300)
    if mention.conversation_id:
        mention.conversation_id = _fit_id(mention.conversation_id, 64)
    if mention.author_name and len(mention.author_name) > 300:
        mention.author_name = mention.author_name[:299] + "…"
    if mention.author_handle and len(mention.author_handle) > 100:
        mention.author_handle = None  # a cut handle would name someone else
    mention.text = clean_whitespace(mention.text or "")[:MAX_TEXT]
    mention.title = clean_whitespace(mention.title)[:2000] if mention.title else None
    if mention.published_at is not None:
        published = mention.published_at
        mention.published_at = (published if published.tzinfo else published.replace(tzinfo=UTC)).astimezone(
            UTC
        )
    mention.collected_at = now
    if mention.lang:
        mention.lang = mention.lang.lower()[:8]
    return mention


def _fit_id(value: str, width: int) -> str:
    """An identifier that fits its column: too long, it becomes its SHA-256 (stable, so dedup holds).

    One over-long value (a 253-character Bluesky handle, a long URI) would otherwise fail its
    whole batch on PostgreSQL on every retry.
    """
    if len(value) <= width:
        return value
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:width]


class Pipeline:
    """Built once per config; `ingest` is called for every batch from every source."""

    def __init__(
        self,
        settings: Settings,
        *,
        enrichers: Sequence[Enricher] | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        self.settings = settings
        self.matcher = BrandMatcher(settings.brands)
        if enrichers is None:
            enrichers = [Analyzer.for_settings(settings)]
        self.enrichers = list(enrichers)
        self.rules = rules if rules is not None else RuleSet.from_settings(settings)

    def match_brands(self, mentions: Iterable[Mention], allowed: Iterable[str] = ()) -> list[Mention]:
        allowed = tuple(allowed)
        matched = []
        for mention in mentions:
            text = f"{mention.title}\n{mention.text}" if mention.title else mention.text
            brand = self.matcher.match(text, allowed) or self.matcher.brand_of_account(
                mention.author_handle, allowed
            )
            if brand is None:
                continue
            mention.brand = brand
            mention.author_is_brand = self.matcher.is_brand_account(brand, mention.author_handle)
            matched.append(mention)
        return matched

    def ingest(
        self,
        session: Session,
        mentions: Sequence[Mention],
        *,
        source: str,
        stream: str | None = None,
        cursor: dict[str, Any] | None = None,
        now: datetime | None = None,
        brands: Iterable[str] = (),
        state_also: Mapping[str, Any] | None = None,
    ) -> IngestResult:
        """Run one batch through the whole path inside the caller's transaction; with a `stream`,
        its cursor is saved too (and the columns of `state_also`: see `state.record_success`)."""
        now = now or datetime.now(UTC)
        result, stored, tail = self._ingest(session, mentions, source, now, brands)
        with queries.pipelined(session, tail.returns_nothing):
            tail.write(session)
            if stream is not None:
                state.record_success(session, source, stream, cursor or {}, now, len(stored), state_also)
        return result

    def ingest_batches(
        self,
        session: Session,
        batches: Sequence[Batch],
        *,
        source: str,
        now: datetime | None = None,
        brands: Iterable[str] = (),
    ) -> tuple[IngestResult, list[IngestResult]]:
        """Several streams' batches as one pass (one analysis batch, one insert, one flag pass),
        each stream's cursor saved with its mentions in the caller's transaction.

        Returns the total and, per batch, what it received and stored.
        """
        now = now or datetime.now(UTC)
        owner = {id(m): n for n, batch in enumerate(batches) for m in batch.mentions}
        total, stored, tail = self._ingest(
            session, [m for b in batches for m in b.mentions], source, now, brands
        )
        results = [IngestResult(received=len(batch.mentions)) for batch in batches]
        for mention in stored:
            results[owner[id(mention)]].stored += 1
        with queries.pipelined(session, tail.returns_nothing):
            tail.write(session)
            for batch, result in zip(batches, results, strict=True):
                state.record_success(session, source, batch.stream, batch.cursor, now, result.stored)
        return total, results

    def _ingest(
        self, session: Session, mentions: Sequence[Mention], source: str, now: datetime, brands: Iterable[str]
    ) -> tuple[IngestResult, list[Mention], _Tail]:
        """The batch up to its last writes, which are returned (`_Tail`) for the caller to send
        with its own (the stream's state), all at once."""
        result = IngestResult(received=len(mentions))
        if not mentions:  # a 304, an empty page: only the cursor moves
            return result, [], _Tail()
        normalized = [normalize(m, now) for m in mentions if m.external_id and m.external_id.strip()]
        matched = self.match_brands(normalized, brands)
        result.unmatched = len(normalized) - len(matched)
        known = queries.known_external_ids(session, source, [m.external_id for m in matched])
        fresh = [m for m in matched if m.external_id not in known]
        for enrich in self.enrichers:
            fresh = enrich(fresh)
        stored = queries.insert_mentions(session, fresh)
        result.stored = len(stored)
        result.duplicates = len(matched) - len(stored)
        context = DatabaseContext(session)  # one per batch: it caches its answers
        tail = self._flag(session, [(m, self.rules.evaluate(m, context)) for m in stored], now, result)
        return result, stored, tail

    def _flag(
        self,
        session: Session,
        evaluated: Sequence[tuple[Mention, list[FlagDraft]]],
        now: datetime,
        result: IngestResult,
    ) -> _Tail:
        """Flags, cases and alerts for a whole batch of stored mentions, with a few statements.

        Flags are handled in mention order, each mention's by priority, as one at a time would
        be: a mention's flag opens its author's case, later ones attach to it. Mentions that
        raise no flag may still join a case: its author's follow-up, or a reply in its
        conversation. Rows are written once for the batch, all in the caller's transaction: the
        flags here (one INSERT); then, by the returned `_Tail`, the case events (one INSERT), the
        changed cases (one UPDATE) and every outbox row (one INSERT).
        """
        flagged = [
            (mention, draft)
            for mention, drafts in evaluated
            for draft in sorted(drafts, key=lambda d: d.priority, reverse=True)
        ]
        cases = CaseBatch.load(session, (m for m, _ in evaluated), now)
        cases.prepare([(m, d.severity, d.priority) for m, d in flagged])
        updates = [cases.flag(m, d.severity, d.priority) for m, d in flagged]
        cooldowns = [d.cooldown for m, d in flagged if d.cooldown is not None and m.author_id]
        latest = (
            queries.latest_flags(
                session,
                {
                    _cooldown_key(m, d)
                    for (m, d), case in zip(flagged, updates, strict=True)
                    if (case.opened or case.escalated) and d.cooldown is not None and m.author_id
                },
                now - max(cooldowns),
            )
            if cooldowns
            else {}
        )
        rows: list[tuple[Any, ...]] = []  # queries.FLAG_COLUMNS
        alerting: list[tuple[int, FlagDraft, int]] = []  # (mention id, draft, case id)
        flagged_here: set[tuple[str, str, str]] = set()  # (rule, brand, author): flagged in this batch
        for (mention, draft), case in zip(flagged, updates, strict=True):
            assert mention.id is not None
            alert = case.opened or case.escalated
            explanation = draft.explanation
            if mention.author_id:
                key = _cooldown_key(mention, draft)
                if alert and draft.cooldown is not None:
                    since = now - draft.cooldown
                    earlier = latest.get(key)
                    if (key in flagged_here and now > since) or (earlier is not None and earlier > since):
                        alert = False
                        explanation = {
                            **explanation,
                            "cooldown": "no alert: this rule flagged the same author within "
                            + format_duration(draft.cooldown),
                        }
                flagged_here.add(key)
            rows.append(
                (mention.id, case.case_id, draft.rule, draft.severity, draft.priority, explanation, now)
            )
            if alert:
                alerting.append((mention.id, draft, case.case_id))
            result.cases_opened += int(case.opened)
        result.flags += len(rows)
        flag_ids = queries.insert_flags(session, rows, ids=bool(alerting))
        alerts: list[dict[str, Any]] = []
        for mention_id, draft, case_id in alerting:
            queued = flag_alerts(
                flag_id=flag_ids[(mention_id, draft.rule)],
                case_id=case_id,
                severity=draft.severity,
                channels=draft.notify,
                configured=self.settings.channels,
                now=now,
            )
            result.alerts_queued += len(queued)
            alerts += queued
        cases.attach_followups(
            [m for m, drafts in evaluated if not drafts],
            auto_resolve=self.settings.auto_resolve,
            channels=self.settings.channels,
        )
        return _Tail(cases, alerts)


@dataclass(slots=True)
class _Tail:
    """A batch's last writes: its case events and changed cases, then its outbox rows.

    Left to `ingest` so that they go out with the stream's state in one `queries.pipelined`
    block: none of them waits for the one before (unless a resolution notice needs its
    event's id).
    """

    cases: CaseBatch | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def returns_nothing(self) -> bool:
        return self.cases is None or not self.cases.needs_ids

    def write(self, session: Session) -> None:
        notices = self.cases.write() if self.cases is not None else []
        insert_alerts(session, self.alerts + notices)


def _cooldown_key(mention: Mention, draft: FlagDraft) -> tuple[str, str, str]:
    """What a rule's cooldown is counted on: the rule, the brand and the author."""
    return (draft.rule, str(mention.brand), str(mention.author_id))
