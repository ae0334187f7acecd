"""`ingest`: the one path every mention takes, whatever source it came from.

normalize -> brand match -> (skip already stored) -> enrich -> store -> rules -> case -> outbox,
and the source's cursor is saved in the same transaction as the mentions it covers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.alerts.outbox import enqueue_flag
from monitor.analysis.brands import BrandMatcher
from monitor.analysis.enrich import Analyzer
from monitor.analysis.text import clean_whitespace
from monitor.cases import attach_followups, open_cases_for, open_or_attach
from monitor.confbase import format_duration
from monitor.config import Settings
from monitor.mention import Mention
from monitor.rules.context import DatabaseContext
from monitor.rules.engine import FlagDraft, RuleSet
from monitor.storage import queries, state
from monitor.storage.tables import FlagRow, MentionRow

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
    ) -> IngestResult:
        """Run one batch through the whole path inside the caller's transaction."""
        now = now or datetime.now(UTC)
        result = IngestResult(received=len(mentions))
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
        open_cases = open_cases_for(session, stored)  # one query for the batch's authors, not one per flag
        unflagged = [m for m in stored if not self._flag(session, m, now, result, open_cases)]
        # Posts that raise no flag may still belong to a case: its author's follow-up, or a reply
        # in its conversation.
        attach_followups(
            session, unflagged, now, auto_resolve=self.settings.auto_resolve, channels=self.settings.channels
        )
        if stream is not None:
            state.record_success(session, source, stream, cursor or {}, now, len(stored))
        return result

    def _flag(
        self,
        session: Session,
        mention: Mention,
        now: datetime,
        result: IngestResult,
        known: dict[tuple[str, str], Any] | None = None,
    ) -> bool:
        """Flag the mention for each rule it matches (opening or feeding a case); False if none."""
        drafts = self.rules.evaluate(mention, DatabaseContext(session))
        if not drafts:
            return False
        assert mention.id is not None
        for draft in sorted(drafts, key=lambda d: d.priority, reverse=True):
            case = open_or_attach(session, mention, draft.severity, draft.priority, now, known)
            alert = case.opened or case.escalated
            explanation = draft.explanation
            if alert and draft.cooldown is not None and _cooling_down(session, mention, draft, now):
                alert = False
                explanation = {
                    **explanation,
                    "cooldown": f"no alert: this rule flagged the same author within {format_duration(draft.cooldown)}",
                }
            flag = FlagRow(
                mention_id=mention.id,
                case_id=case.case_id,
                rule=draft.rule,
                severity=draft.severity,
                priority=draft.priority,
                explanation=explanation,
                created_at=now,
            )
            session.add(flag)
            if alert:
                session.flush()  # the outbox rows need the flag's id
            result.flags += 1
            result.cases_opened += int(case.opened)
            if alert:
                result.alerts_queued += enqueue_flag(
                    session,
                    flag_id=flag.id,
                    case_id=case.case_id,
                    severity=draft.severity,
                    channels=draft.notify,
                    configured=self.settings.channels,
                    now=now,
                )
        return True


def _cooling_down(session: Session, mention: Mention, draft: FlagDraft, now: datetime) -> bool:
    """Did this rule flag a post of the same brand by the same author within its cooldown?"""
    if not mention.author_id or draft.cooldown is None:
        return False
    earlier = session.scalar(
        select(FlagRow.id)
        .join(MentionRow, MentionRow.id == FlagRow.mention_id)
        .where(
            FlagRow.rule == draft.rule,
            FlagRow.created_at > now - draft.cooldown,
            FlagRow.mention_id != mention.id,
            MentionRow.brand == mention.brand,
            MentionRow.author_id == mention.author_id,
        )
        .limit(1)
    )
    return earlier is not None
