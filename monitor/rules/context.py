"""The database behind the conditions that need more than one mention, read-only.

The pipeline and `monitor rules backtest` pass a `DatabaseContext` to `RuleSet.evaluate`; the
engine itself never touches the database, so it stays testable without one.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.mention import Mention
from monitor.storage.tables import MentionRow


class DatabaseContext:
    """Answers `RuleContext` questions with SELECTs on the caller's session (it writes nothing)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._cache: dict[tuple[object, ...], int] = {}

    def author_mentions(self, mention: Mention, within: timedelta) -> int:
        """Stored mentions of the brand by this author published (else collected) in the `within`
        up to this mention's time, plus the mention itself when it is not stored."""
        at = mention.published_at or mention.collected_at
        unsaved = 1 if mention.id is None else 0
        if not mention.author_id or not mention.brand or at is None:
            return 1
        key = (mention.brand, mention.author_id, at, within, mention.id)
        if key not in self._cache:
            if len(self._cache) >= 4096:  # a backtest walks many mentions through one context
                self._cache.clear()
            moment = func.coalesce(MentionRow.published_at, MentionRow.collected_at)
            count = self.session.scalar(
                select(func.count())
                .select_from(MentionRow)
                .where(
                    MentionRow.brand == mention.brand,
                    MentionRow.author_id == mention.author_id,
                    moment > at - within,
                    moment <= at,
                )
            )
            self._cache[key] = int(count or 0) + unsaved
        return self._cache[key]
