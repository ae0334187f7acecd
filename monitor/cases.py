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

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monitor.alerts.base import ChannelConfig
from monitor.alerts.outbox import case_event_alerts, enqueue_case_event
from monitor.confbase import severity_rank
from monitor.errors import MonitorError
from monitor.mention import Mention
from monitor.storage.queries import by_dialect, insert_values, update_values
from monitor.storage.tables import (
    CASE_EVENTS,
    CASES,
    OPEN_CASE_STATUSES,
    CaseEventRow,
    CaseRow,
    FlagRow,
    MentionRow,
    OutboxRow,
)

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


@dataclass(slots=True)
class _Case:
    """A case as one ingest batch sees it: read once, changed in memory, written once."""

    id: int
    brand: str
    author_key: str
    status: str
    severity: str
    priority: float
    hint: str | None
    touched: bool = False  # updated_at becomes the batch's time

    def changes(self) -> tuple[Any, ...]:
        return (self.status, self.severity, self.priority, self.hint)


_CASE_COLUMNS = (
    CASES.c.id,
    CASES.c.brand,
    CASES.c.author_key,
    CASES.c.status,
    CASES.c.severity,
    CASES.c.priority,
    CASES.c.hint,
)
_OPEN = CASES.c.status.in_(OPEN_CASE_STATUSES)
# `CaseBatch.write`'s one UPDATE: (id, changed, *_Case.changes(), now, resolved) per case.
_UPDATE_COLUMNS = (
    ("id", CASES.c.id.type),
    ("changed", Boolean()),
    ("status", CASES.c.status.type),
    ("severity", CASES.c.severity.type),
    ("priority", CASES.c.priority.type),
    ("hint", CASES.c.hint.type),
    ("at", CASES.c.updated_at.type),
    ("resolved", Boolean()),
)
_UPDATE_SET = ", ".join(
    [
        f"{name} = CASE WHEN v.changed THEN v.{name} ELSE cases.{name} END"
        for name in ("status", "severity", "priority", "hint")
    ]
    + ["updated_at = v.at", "resolved_at = CASE WHEN v.resolved THEN v.at ELSE cases.resolved_at END"]
)
_EVENT_COLUMNS = ("case_id", "at", "kind", "actor", "note", "mention_id")
# One index probe per (brand, author) of the batch, the whole list bound as one value:
# expanding a hundred-item IN cost SQLAlchemy more than the lookups themselves, and
# PostgreSQL's plan for one depends on statistics a young table does not have yet.
_OPEN_SQL = "status IN ({})".format(", ".join(f"'{status}'" for status in OPEN_CASE_STATUSES))
_OPEN_OF_AUTHORS = {
    "sqlite": "SELECT c.id, c.brand, c.author_key, c.status, c.severity, c.priority, c.hint"
    " FROM json_each(?) AS k CROSS JOIN cases AS c"  # CROSS JOIN: k drives the probes
    " WHERE c.brand = json_extract(k.value, '$[0]') AND c.author_key = json_extract(k.value, '$[1]')"
    f" AND c.{_OPEN_SQL}",
    "postgresql": "SELECT c.id, c.brand, c.author_key, c.status, c.severity, c.priority, c.hint"
    " FROM unnest(CAST(%b AS VARCHAR[]), CAST(%b AS VARCHAR[])) AS k(brand, author_key)"
    " CROSS JOIN LATERAL (SELECT * FROM cases WHERE brand = k.brand AND author_key = k.author_key"
    f" AND {_OPEN_SQL} LIMIT 1) AS c",
}
# The last closed case (highest id) of each (brand, author), one probe each of the index on
# (brand, author_key) (migration 0007): reopening it keeps an author's history in one place.
_CLOSED_OF_AUTHORS = {
    "sqlite": "SELECT c.id, c.brand, c.author_key FROM json_each(?) AS k CROSS JOIN cases AS c"
    " WHERE c.id = (SELECT id FROM cases WHERE brand = json_extract(k.value, '$[0]')"
    f" AND author_key = json_extract(k.value, '$[1]') AND NOT {_OPEN_SQL} ORDER BY id DESC LIMIT 1)",
    "postgresql": "SELECT c.id, k.brand, k.author_key"
    " FROM unnest(CAST(%b AS VARCHAR[]), CAST(%b AS VARCHAR[])) AS k(brand, author_key)"
    " CROSS JOIN LATERAL (SELECT id FROM cases WHERE brand = k.brand AND author_key = k.author_key"
    f" AND NOT {_OPEN_SQL} ORDER BY id DESC LIMIT 1) AS c",
}


def _authors(keys: Iterable[tuple[str, str]]) -> dict[str, tuple[Any, ...]]:
    """(brand, author key) pairs as `_OPEN_OF_AUTHORS` and `_CLOSED_OF_AUTHORS` bind them."""
    pairs = list(keys)
    return {
        "sqlite": (json.dumps(pairs),),
        "postgresql": ([brand for brand, _ in pairs], [author for _, author in pairs]),
    }


class CaseBatch:
    """The case work of one ingest batch: a few queries in, one bulk write per table out.

    `load` reads the open cases of the batch's authors; `prepare` opens (or reopens) the cases
    its flags need; `flag` and `attach_followups` change cases and collect timeline events in
    memory, in the order the mentions came; `write` stores the events and the changed cases.
    Between `load` and `write` the batch's cases must not be changed through the ORM.
    """

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now
        self._open: dict[tuple[str, str], _Case] = {}  # (brand, author key) -> its open case
        self._cases: dict[int, _Case] = {}  # every case read or opened, by id
        self._stored: dict[int, tuple[Any, ...]] = {}  # their values as stored
        self._resolved: list[int] = []  # auto-resolved here: resolved_at is the batch's time
        self._opening: dict[tuple[str, str], str] = {}  # opened here, "opened"/"reopened" event owed
        self._conversations: dict[str, _Case] = {}  # flagged here: conversation -> case
        self._events: list[tuple[Any, ...]] = []  # _EVENT_COLUMNS
        self._notices: list[tuple[int, int, str]] = []  # (event index, case id, notice kind)
        self._channels: Mapping[str, ChannelConfig] = {}

    @classmethod
    def load(cls, session: Session, mentions: Iterable[Mention], now: datetime) -> CaseBatch:
        """The open cases of these mentions' authors, in one query."""
        batch = cls(session, now)
        batch._read_open({(str(m.brand), author_key(m)) for m in mentions if m.brand})
        return batch

    def _add(self, case: _Case) -> _Case:
        """The batch's copy of a case (the one already held, if any), indexed by id."""
        held = self._cases.get(case.id)
        if held is None:
            held = self._cases[case.id] = case
            self._stored[case.id] = case.changes()
        if held.status in OPEN_CASE_STATUSES:
            self._open[(held.brand, held.author_key)] = held
        return held

    def _read_open(self, keys: set[tuple[str, str]]) -> None:
        keys -= self._open.keys()
        if not keys:
            return
        for row in by_dialect(self.session, _OPEN_OF_AUTHORS, _authors(keys)):
            self._add(_Case(*row))

    def prepare(self, flags: Sequence[tuple[Mention, str, float]]) -> None:
        """Open a case for every author flagged (mention, severity, priority) who has none.

        The first flag of an author, in the given order, opens it with its severity, reopening
        the author's last closed case so the history stays in one place. New cases are inserted
        in one statement; one another node opened first is attached to instead, as any open case.
        """
        first: dict[tuple[str, str], tuple[Mention, str, float]] = {}
        for mention, severity, priority in flags:
            assert mention.brand is not None
            key = (mention.brand, author_key(mention))
            if key not in self._open and key not in self._opening:
                first.setdefault(key, (mention, severity, priority))
        if not first:
            return
        closed = {
            (brand, key): case_id
            for case_id, brand, key in by_dialect(self.session, _CLOSED_OF_AUTHORS, _authors(first))
        }
        lost: set[tuple[str, str]] = set()
        fresh = []
        for key, (mention, severity, priority) in first.items():
            if key in closed:
                if not self._reopen(closed[key], key, severity, priority):
                    lost.add(key)
                continue
            author = mention.author_name or mention.author_handle
            fresh.append((*key, author, "new", severity, priority, self.now, self.now))
        if fresh:
            returned = insert_values(
                self.session,
                CASES,
                (
                    "brand",
                    "author_key",
                    "author_name",
                    "status",
                    "severity",
                    "priority",
                    "opened_at",
                    "updated_at",
                ),
                fresh,
                returning=("id", "brand", "author_key"),
                skip_conflicts=True,
            )
            opened = {(brand, key): case_id for case_id, brand, key in returned}
            for key, (_, severity, priority) in first.items():
                if key in closed:
                    continue
                if key not in opened:
                    lost.add(key)  # another node opened it first
                    continue
                self._add(_Case(opened[key], *key, "new", severity, priority, None))
                self._opening[key] = "opened"
        self._read_open(lost)

    def _reopen(self, case_id: int, key: tuple[str, str], severity: str, priority: float) -> bool:
        """Reopen a closed case; False when another node opened one for this author first."""
        try:
            with self.session.begin_nested():
                row = self.session.execute(
                    update(CASES)
                    .where(CASES.c.id == case_id, ~_OPEN)
                    .values(
                        status="new", severity=severity, priority=priority, hint=None, updated_at=self.now
                    )
                    .returning(CASES.c.id)
                ).first()
        except IntegrityError:
            return False
        if row is None:  # reopened by another node meanwhile
            return False
        self._add(_Case(case_id, *key, "new", severity, priority, None))
        self._opening[key] = "reopened"
        return True

    def _event(
        self,
        case: _Case,
        kind: str,
        *,
        mention_id: int | None = None,
        note: str | None = None,
        actor: str | None = None,
    ) -> None:
        self._events.append((case.id, self.now, kind, actor, note, mention_id))  # _EVENT_COLUMNS

    def flag(self, mention: Mention, severity: str, priority: float) -> CaseUpdate:
        """Attach a flagged mention to its author's open case, or open it (see `prepare`); a
        higher severity escalates the case."""
        assert mention.id is not None and mention.brand is not None
        key = (mention.brand, author_key(mention))
        if key not in self._open:
            self.prepare([(mention, severity, priority)])
        case = self._open.get(key)
        assert case is not None, "prepare leaves every flagged author an open case"
        if mention.conversation_id:
            self._conversations[mention.conversation_id] = case
        opening = self._opening.pop(key, None)
        if opening is not None:
            self._event(case, opening, mention_id=mention.id, note=f"severity {severity}")
            return CaseUpdate(case.id, opened=True, escalated=False)
        escalated = severity_rank(severity) > severity_rank(case.severity)
        if escalated:
            case.severity = severity
        case.priority = max(case.priority, priority)
        case.touched = True
        self._event(case, "escalated" if escalated else "flagged", mention_id=mention.id)
        return CaseUpdate(case.id, opened=False, escalated=escalated)

    def attach_followups(
        self,
        mentions: Sequence[Mention],
        *,
        auto_resolve: bool = False,
        channels: Mapping[str, ChannelConfig] | None = None,
    ) -> int:
        """Unflagged mentions by the author of an open case (or in its X conversation) join it.

        A clearly positive one adds the "customer seems satisfied" hint (and resolves the case
        when `auto_resolve` is on), with a notice for the channels that want one. At most one
        query (conversations), whatever the batch's size.
        """
        self._channels = channels or {}
        candidates = [m for m in mentions if m.id is not None and m.brand]
        conversations = {m.conversation_id for m in candidates if m.conversation_id}
        by_conversation: dict[str, _Case] = {}
        if conversations:
            query = (
                select(MentionRow.conversation_id, *_CASE_COLUMNS)
                .join(CaseEventRow, CaseEventRow.mention_id == MentionRow.id)
                .join(CASES, CASES.c.id == CaseEventRow.case_id)
                .where(MentionRow.conversation_id.in_(list(conversations)), _OPEN)
                .order_by(CaseEventRow.id)
            )
            # A conversation in several open cases: the one that took one of its posts last.
            for conversation, *columns in self.session.execute(query):
                by_conversation[str(conversation)] = self._add(_Case(*columns))
            # Later still: the cases flagged in this batch, whose events are not written yet.
            by_conversation.update((c, case) for c, case in self._conversations.items() if c in conversations)
        attached = 0
        for mention in candidates:
            case = self._open.get((str(mention.brand), author_key(mention)))
            same_author = case is not None and case.status in OPEN_CASE_STATUSES
            if not same_author and mention.conversation_id:
                case = by_conversation.get(mention.conversation_id)
            if case is None or case.status not in OPEN_CASE_STATUSES:
                continue  # none, or auto-resolved by an earlier post of this batch
            # No rule flagged it (it is in this list), it does not threaten to leave, and it is
            # clearly positive: the seed story's happy follow-up post.
            satisfied = same_author and (mention.sentiment or 0) >= SATISFIED_SENTIMENT and not mention.churn
            kind = (
                "mention" if same_author else ("brand-reply" if mention.author_is_brand else "conversation")
            )
            self._event(case, kind, mention_id=mention.id)
            case.touched = True
            attached += 1
            if satisfied:
                case.hint = SATISFIED_HINT
                self._event(case, "hint", mention_id=mention.id, note=f"{SATISFIED_HINT}; suggested: resolve")
                if auto_resolve:
                    case.status = "resolved"
                    self._resolved.append(case.id)
                    self._event(case, "resolved", actor="monitor", note="auto-resolved: " + SATISFIED_HINT)
                if any(c.notify_resolved for c in self._channels.values()):
                    notice = "resolved" if auto_resolve else "resolution-suggested"
                    self._notices.append((len(self._events) - 1, case.id, notice))
        return attached

    @property
    def needs_ids(self) -> bool:
        """Whether `write` reads ids back (a resolution notice names its event)."""
        return bool(self._notices)

    def write(self) -> list[dict[str, Any]]:
        """Store the batch's case events (one INSERT) and changed cases (one UPDATE).

        Returns the outbox rows of the resolution notices, keyed by event ids known only now,
        for the caller to insert with the batch's other alerts.
        """
        ids: dict[tuple[int, str, int | None], int] = {}
        returning = ("id", "case_id", "kind", "mention_id") if self._notices else ()
        # A notice's event is the only one of its case, kind and mention in the batch.
        for event, case, kind, mention in insert_values(
            self.session, CASE_EVENTS, _EVENT_COLUMNS, self._events, returning=returning
        ):
            ids[(case, kind, mention)] = event
        # One UPDATE for every case the batch changed or touched: a changed case gets its new
        # values, a touched one only its time (what another node or a user changed since it was
        # read stays), an auto-resolved one its resolved_at.
        resolved = set(self._resolved)
        rows = []
        for case in self._cases.values():
            changed = case.changes() != self._stored[case.id]
            if changed or case.touched:
                rows.append((case.id, changed, *case.changes(), self.now, case.id in resolved))
        update_values(
            self.session, CASES, _UPDATE_COLUMNS, rows, assignments=_UPDATE_SET, where="cases.id = v.id"
        )
        notices: list[dict[str, Any]] = []
        for index, case_id, kind in self._notices:
            event = self._events[index]
            notices += case_event_alerts(
                event_id=ids[(event[0], event[2], event[5])],  # case, kind, mention
                case_id=case_id,
                kind=kind,
                configured=self._channels,
                now=self.now,
            )
        for case in self._cases.values():
            self._stored[case.id], case.touched = case.changes(), False
        self._events, self._notices, self._resolved = [], [], []
        return notices


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
