"""Cases: one open case per (brand, author); later flags by the same author attach to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monitor.confbase import severity_rank
from monitor.mention import Mention
from monitor.storage.tables import OPEN_CASE_STATUSES, CaseEventRow, CaseRow


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


def open_or_attach(
    session: Session, mention: Mention, severity: str, priority: float, now: datetime
) -> CaseUpdate:
    """Attach a flagged mention to its author's open case, or open one."""
    assert mention.id is not None and mention.brand is not None
    key = author_key(mention)
    case = _open_case(session, mention.brand, key)
    if case is None:
        try:
            with session.begin_nested():
                case = CaseRow(
                    brand=mention.brand,
                    author_key=key,
                    author_name=mention.author_name or mention.author_handle,
                    status="new",
                    severity=severity,
                    priority=priority,
                    opened_at=now,
                    updated_at=now,
                )
                session.add(case)
                session.flush()
        except IntegrityError:  # another node opened it first
            case = _open_case(session, mention.brand, key)
            assert case is not None
        else:
            session.add(CaseEventRow(case_id=case.id, at=now, kind="opened", mention_id=mention.id))
            return CaseUpdate(case.id, opened=True, escalated=False)
    escalated = severity_rank(severity) > severity_rank(case.severity)
    if escalated:
        case.severity = severity
    case.priority = max(case.priority, priority)
    case.updated_at = now
    session.add(
        CaseEventRow(
            case_id=case.id, at=now, kind="escalated" if escalated else "mention", mention_id=mention.id
        )
    )
    return CaseUpdate(case.id, opened=False, escalated=escalated)
