"""The one record every source produces and every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class Mention:
    """A post that may mention a brand.

    Sources fill what they know (identity, text, author, dates); the ingest pipeline fills the
    rest (brand, analysis scores). Nothing downstream knows where a mention came from except
    through these fields.
    """

    source: str
    external_id: str
    text: str
    url: str | None = None
    title: str | None = None
    author_id: str | None = None
    author_name: str | None = None
    author_followers: int | None = None
    author_handle: str | None = None
    lang: str | None = None
    published_at: datetime | None = None
    conversation_id: str | None = None
    # Filled by the pipeline.
    brand: str | None = None
    author_is_brand: bool = False
    collected_at: datetime | None = None
    sentiment: float | None = None
    complaint_score: float | None = None
    churn: bool | None = None
    id: int | None = None
    # Why the analysis scored what it did (top words, matched phrases): shown in flag explanations.
    evidence: dict[str, list[str]] = field(default_factory=dict)
