"""Cases: the support team's work on one unhappy author, from flag to resolution.

One open case per (brand, author): later flags by the same author attach to it, and so do
their unflagged mentions and, on X, replies in the same conversation. Every change is a
`case_events` row, so `monitor cases show` can replay the whole story.

    new ──contact──► contacted ──resolve──► resolved
     │  └──resolve──────────────────────►     │
     └──dismiss──► dismissed ◄──dismiss──┘    │
    resolved / dismissed ──reopen (or a new complaint)──► new
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monitor.alerts.base import ChannelConfig
from monitor.alerts.outbox import enqueue_case_event
from monitor.confbase import severity_rank
from monitor.errors import MonitorError
from monitor.mention import Mention
from monitor.storage.tables import OPEN_CASE_STATUSES, CaseEventRow, CaseRow, FlagRow, MentionRow, OutboxRow

STATUSES = ("new", "contacted", "resolved", "dismissed")
ACTIONS: dict[str, dict[str, str]] = {
    # action -> {from status: to status}
    "contact": {"new": "contacted", "contacted": "contacted"},
    "resolve": {"new": "resolved", "contacted": "resolved"},
    "dismiss": {"new": "dismissed", "contacted": "dismissed"},
    "reopen": {"resolved": "new", "dismissed": "new"},
}
# A follow-up this positive, and not a complaint, suggests the customer is satisfied.
SATISFIED_SENTIMENT = 0.5
SATISFIED_HINT = "customer seems satisfied"


class CaseError(MonitorError):
    """An unknown case or a move the workflow does not allow; the message says what is allowed."""


@dataclass(frozen=True, slots=True)
class CaseUpdate:
    case_id: int
    opened: bool
    escalated: bool


def author_key(mention: Mention) -> str:
    return mention.author_id or f"{mention.source}:{mention.external_id}"


def _open_case(session: Session, brand: str, key: str) -> CaseRow | None:
    return session.scalar(
        select(CaseRow).where(
            CaseRow.brand == brand, CaseRow.author_key == key, CaseRow.status.in_(OPEN_CASE_STATUSES)
        )
    )


def _event(session: Session, case: CaseRow, kind: str, now: datetime, **fields: Any) -> CaseEventRow:
    event = CaseEventRow(case_id=case.id, at=now, kind=kind, **fields)
    session.add(event)  # written with the next flush (before any query that could need it)
    return event


def open_cases_for(session: Session, mentions: Iterable[Mention]) -> dict[tuple[str, str], CaseRow | None]:
    """The open cases of these mentions' authors, in one query: a batch's flags look here first."""
    keys = {(str(m.brand), author_key(m)) for m in mentions if m.brand}
    found: dict[tuple[str, str], CaseRow | None] = dict.fromkeys(keys)
    if keys:
        query = select(CaseRow).where(
            CaseRow.status.in_(OPEN_CASE_STATUSES), tuple_(CaseRow.brand, CaseRow.author_key).in_(list(keys))
        )
        for case in session.scalars(query):
            found[(case.brand, case.author_key)] = case
    return found


def open_or_attach(
    session: Session,
    mention: Mention,
    severity: str,
    priority: float,
    now: datetime,
    known: dict[tuple[str, str], CaseRow | None] | None = None,
) -> CaseUpdate:
    """Attach a flagged mention to its author's open case, or open one (reopening the last one
    closed for this author, so the history stays in one place). `known` (from `open_cases_for`)
    saves a query per flag and learns the cases opened here."""
    assert mention.id is not None and mention.brand is not None
    key = author_key(mention)
    if known is not None and (mention.brand, key) in known:
        case = known[(mention.brand, key)]
    else:
        case = _open_case(session, mention.brand, key)
    if case is None:
        closed = session.scalar(
            select(CaseRow)
            .where(CaseRow.brand == mention.brand, CaseRow.author_key == key)
            .order_by(CaseRow.id.desc())
            .limit(1)
        )
        try:
            with session.begin_nested():
                if closed is not None:
                    case, kind = closed, "reopened"
                    case.status, case.severity, case.priority = "new", severity, priority
                    case.hint = None
                else:
                    case, kind = (
                        CaseRow(
                            brand=mention.brand,
                            author_key=key,
                            author_name=mention.author_name or mention.author_handle,
                            status="new",
                            severity=severity,
                            priority=priority,
                            opened_at=now,
                        ),
                        "opened",
                    )
                    session.add(case)
                case.updated_at = now
                session.flush()
        except IntegrityError:  # another node opened it first
            case = _open_case(session, mention.brand, key)
            assert case is not None
        else:
            _event(session, case, kind, now, mention_id=mention.id, note=f"severity {severity}")
            if known is not None:
                known[(mention.brand, key)] = case
            return CaseUpdate(case.id, opened=True, escalated=False)
    escalated = severity_rank(severity) > severity_rank(case.severity)
    if escalated:
        case.severity = severity
    case.priority = max(case.priority, priority)
    case.updated_at = now
    _event(session, case, "escalated" if escalated else "flagged", now, mention_id=mention.id)
    return CaseUpdate(case.id, opened=False, escalated=escalated)


def attach_followups(
    session: Session,
    mentions: Sequence[Mention],
    now: datetime,
    *,
    auto_resolve: bool = False,
    channels: Mapping[str, ChannelConfig] | None = None,
) -> int:
    """Unflagged mentions by the author of an open case (or in its X conversation) join it.

    A clearly positive one adds the "customer seems satisfied" hint (and resolves the case when
    `auto_resolve` is on). Two queries per batch, whatever its size.
    """
    candidates = [m for m in mentions if m.id is not None and m.brand]
    if not candidates:
        return 0
    keys = {(str(m.brand), author_key(m)) for m in candidates}
    by_author = {
        (c.brand, c.author_key): c
        for c in session.scalars(
            select(CaseRow).where(
                CaseRow.status.in_(OPEN_CASE_STATUSES),
                tuple_(CaseRow.brand, CaseRow.author_key).in_(list(keys)),
            )
        )
    }
    conversations = {m.conversation_id for m in candidates if m.conversation_id}
    by_conversation: dict[str, CaseRow] = {}
    if conversations:
        query = (
            select(MentionRow.conversation_id, CaseRow)
            .join(CaseEventRow, CaseEventRow.mention_id == MentionRow.id)
            .join(CaseRow, CaseRow.id == CaseEventRow.case_id)
            .where(
                MentionRow.conversation_id.in_(list(conversations)), CaseRow.status.in_(OPEN_CASE_STATUSES)
            )
        )
        by_conversation = {str(conversation): case for conversation, case in session.execute(query)}
    attached = 0
    for mention in candidates:
        case = by_author.get((str(mention.brand), author_key(mention)))
        same_author = case is not None
        if case is None and mention.conversation_id:
            case = by_conversation.get(mention.conversation_id)
        if case is None:
            continue
        # No rule flagged it (it is in this list), it does not threaten to leave, and it is
        # clearly positive: the seed story's happy follow-up post.
        satisfied = same_author and (mention.sentiment or 0) >= SATISFIED_SENTIMENT and not mention.churn
        kind = "mention" if same_author else ("brand-reply" if mention.author_is_brand else "conversation")
        _event(session, case, kind, now, mention_id=mention.id)
        case.updated_at = now
        attached += 1
        if satisfied:
            case.hint = SATISFIED_HINT
            _event(
                session,
                case,
                "hint",
                now,
                mention_id=mention.id,
                note=f"{SATISFIED_HINT}; suggested: resolve",
            )
            if auto_resolve:
                _move(session, case, "resolve", now, actor="monitor", note="auto-resolved: " + SATISFIED_HINT)
            kind = "resolved" if auto_resolve else "resolution-suggested"
            _notify_resolved(session, case, now, channels or {}, kind)
    return attached


def get_case(session: Session, case_id: int) -> CaseRow:
    case = session.get(CaseRow, case_id)
    if case is None:
        raise CaseError(f"case #{case_id} does not exist (see `monitor cases list`)")
    return case


def _move(
    session: Session, case: CaseRow, action: str, now: datetime, *, actor: str | None, note: str | None
) -> None:
    allowed = ACTIONS[action]
    if case.status not in allowed:
        possible = [name for name, moves in ACTIONS.items() if case.status in moves]
        raise CaseError(
            f"case #{case.id} is {case.status}: cannot {action} it; allowed: {', '.join(possible) or 'nothing'}"
        )
    if action == "reopen":
        other = _open_case(session, case.brand, case.author_key)
        if other is not None and other.id != case.id:
            raise CaseError(f"case #{other.id} is already open for this author; work on it instead")
    case.status = allowed[case.status]
    case.updated_at = now
    if action == "contact" and case.first_contact_at is None:
        case.first_contact_at = now
    if action == "resolve":
        case.resolved_at = now
    if action == "reopen":
        case.resolved_at = None
        case.hint = None
    past = {"contact": "contacted", "resolve": "resolved", "dismiss": "dismissed", "reopen": "reopened"}[
        action
    ]
    _event(session, case, past, now, actor=actor, note=note)


def _notify_resolved(
    session: Session,
    case: CaseRow,
    now: datetime,
    channels: Mapping[str, ChannelConfig],
    kind: str = "resolved",
) -> None:
    """Queue the notice for the case's latest event (its id keys the outbox rows)."""
    event = session.scalar(
        select(CaseEventRow).where(CaseEventRow.case_id == case.id).order_by(CaseEventRow.id.desc()).limit(1)
    )
    assert event is not None
    enqueue_case_event(session, event_id=event.id, case_id=case.id, kind=kind, configured=channels, now=now)


def act(
    session: Session,
    case_id: int,
    action: str,
    now: datetime,
    *,
    actor: str | None = None,
    note: str | None = None,
    channels: Mapping[str, ChannelConfig] | None = None,
) -> CaseRow:
    """contact / resolve / dismiss / reopen a case, recording who did it and why."""
    case = get_case(session, case_id)
    _move(session, case, action, now, actor=actor, note=note)
    if action == "resolve":
        _notify_resolved(session, case, now, channels or {})
    return case


def assign(session: Session, case_id: int, to: str, now: datetime, *, actor: str | None = None) -> CaseRow:
    case = get_case(session, case_id)
    if case.status not in OPEN_CASE_STATUSES:
        raise CaseError(f"case #{case.id} is {case.status}: reopen it before assigning it")
    previous = case.assignee
    case.assignee = to
    case.updated_at = now
    _event(session, case, "assigned", now, actor=actor, note=f"{previous or 'nobody'} -> {to}")
    return case


def list_cases(
    session: Session,
    *,
    statuses: Iterable[str] | None = None,
    brand: str | None = None,
    severity: str | None = None,
    assignee: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Cases, most urgent first (priority, then oldest), with their counts of flags and mentions."""
    flags = select(FlagRow.case_id, func.count().label("flags")).group_by(FlagRow.case_id).subquery()
    query = select(CaseRow, func.coalesce(flags.c.flags, 0)).outerjoin(flags, flags.c.case_id == CaseRow.id)
    if statuses:
        query = query.where(CaseRow.status.in_(list(statuses)))
    if brand:
        query = query.where(CaseRow.brand == brand)
    if severity:
        query = query.where(CaseRow.severity == severity)
    if assignee:
        query = query.where(CaseRow.assignee == assignee)
    if since:
        query = query.where(CaseRow.opened_at >= since)
    query = query.order_by(CaseRow.priority.desc(), CaseRow.opened_at, CaseRow.id)
    if limit:
        query = query.limit(limit)
    return [_case_dict(case) | {"flags": int(count)} for case, count in session.execute(query)]


def _case_dict(case: CaseRow) -> dict[str, Any]:
    return {
        "id": case.id,
        "status": case.status,
        "severity": case.severity,
        "priority": case.priority,
        "brand": case.brand,
        "author": case.author_name or case.author_key,
        "author_key": case.author_key,
        "assignee": case.assignee,
        "hint": case.hint,
        "opened_at": case.opened_at,
        "first_contact_at": case.first_contact_at,
        "resolved_at": case.resolved_at,
        "updated_at": case.updated_at,
    }


def timeline(session: Session, case_id: int) -> dict[str, Any]:
    """The case and its story: every event with its mention (scores), flags (why) and alerts."""
    case = get_case(session, case_id)
    events = list(
        session.scalars(
            select(CaseEventRow)
            .where(CaseEventRow.case_id == case.id)
            .order_by(CaseEventRow.at, CaseEventRow.id)
        )
    )
    mention_ids = {e.mention_id for e in events if e.mention_id is not None}
    mentions = {m.id: m for m in session.scalars(select(MentionRow).where(MentionRow.id.in_(mention_ids)))}
    flags: dict[int, list[FlagRow]] = {}
    for flag in session.scalars(select(FlagRow).where(FlagRow.case_id == case.id)):
        flags.setdefault(flag.mention_id, []).append(flag)
    alerts = list(
        session.scalars(select(OutboxRow).where(OutboxRow.case_id == case.id).order_by(OutboxRow.id))
    )
    story = []
    for event in events:
        entry: dict[str, Any] = {
            "at": event.at,
            "event": event.kind,
            "actor": event.actor,
            "note": event.note,
        }
        mention = mentions.get(event.mention_id) if event.mention_id is not None else None
        if mention is not None:
            entry["mention"] = {
                "id": mention.id,
                "source": mention.source,
                "url": mention.url,
                "text": mention.text,
                "published_at": mention.published_at,
                "sentiment": mention.sentiment,
                "complaint_score": mention.complaint_score,
                "churn": mention.churn,
            }
            entry["flags"] = [
                {"rule": f.rule, "severity": f.severity, "why": (f.explanation or {}).get("matched", [])}
                for f in flags.get(mention.id, [])
                if event.kind in ("opened", "reopened", "flagged", "escalated")
            ]
        story.append(entry)
    return {
        "case": _case_dict(case),
        "timeline": story,
        "alerts": [
            {"id": a.id, "kind": a.kind, "channel": a.channel, "status": a.status, "sent_at": a.sent_at}
            for a in alerts
        ],
    }
