"""Hacker News stories and comments through the public Algolia search API (no credentials).

Each query is a stream: `GET {api_url}/search_by_date?query=…&numericFilters=created_at_i>=N`,
newest first. The cursor is `since` (the `created_at_i` of the newest hit handed over) plus
`seen`, the hits already handed over near it. A poll walks backwards from the newest hit down to
`since - overlap` (Algolia indexes a post a little after it is created, and not always in order;
the overlap catches a post indexed late, and `seen` keeps the boundary from being sent twice).

The walk pages by time, not by page number alone: each request asks for hits at or below the
oldest one of the previous page (`created_at_i<=until`), skipping those already handed over at
that second. Algolia stops paginating at 1000 hits (`nbPages`), so a page number alone would lose
the rest of a large backlog; a moving upper bound never reaches that cap. The page number is only
used when more than a page of hits share one second.

While a walk is in progress the cursor keeps the old `since`/`seen` plus where the walk stands
(`until`, `page`, and the walk's newest hit); `since` moves only once the walk reaches the
bottom. A failure or a `max_pages` stop therefore resumes where it stopped: no gap, and the
pipeline drops the few hits fetched twice at a boundary.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from pydantic import Field

from monitor.analysis.text import clean_whitespace, fold, html_to_text
from monitor.confbase import Duration, HttpUrl
from monitor.errors import FatalSourceError, RetriableSourceError, SourceError
from monitor.http import Fetcher, Response, raise_for_status
from monitor.mention import Mention
from monitor.sources.base import Batch, Source, SourceConfig

ITEM_URL = "https://news.ycombinator.com/item?id={}"
MAX_SEEN = 1000  # ids kept in the cursor near `since`; beyond that the pipeline's dedup takes over
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class HackerNewsConfig(SourceConfig):
    type: Literal["hackernews"] = "hackernews"
    api_url: HttpUrl = "https://hn.algolia.com/api/v1"
    query: str | None = Field(default=None, min_length=1, max_length=512)
    tags: str = Field(default="(story,comment)", min_length=1, max_length=200)
    max_pages: int = Field(default=5, ge=1, le=100)
    hits_per_page: int = Field(default=100, ge=1, le=1000)
    lookback: Duration = timedelta(days=2)
    overlap: Duration = timedelta(minutes=2)
    timeout: Duration = timedelta(seconds=20)


def default_queries(brands: Sequence[Any]) -> list[str]:
    """One query per brand name and alias, multi-word ones quoted.

    Algolia ANDs the words of a query, so `Bouygues OR Telecom` cannot be one query. Terms that
    differ only by accents or case are one query: Algolia ignores both.
    """
    queries: dict[str, str] = {}
    for brand in brands:
        for term in (brand.name, *brand.aliases):
            term = " ".join(term.replace('"', " ").split())
            if term:
                queries.setdefault(fold(term), f'"{term}"' if " " in term else term)
    return list(queries.values())


def hit_to_mention(source: str, hit: dict[str, Any]) -> Mention:
    """One Algolia hit (a story or a comment) as a Mention."""
    object_id = str(hit["objectID"])
    url = hit.get("url")
    if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and hit.get("title")):
        url = ITEM_URL.format(object_id)  # comments, Ask HN: the discussion itself
    title = clean_whitespace(str(hit.get("title") or hit.get("story_title") or "")) or None  # plain text
    body = hit.get("comment_text") or hit.get("story_text")  # HN's HTML
    author = hit.get("author") or None
    story_id = hit.get("story_id") or (object_id if "story" in (hit.get("_tags") or ()) else None)
    return Mention(
        source=source,
        external_id=object_id,
        text=html_to_text(str(body)) if body else clean_whitespace(str(hit.get("title") or "")),
        url=url,
        title=title,
        author_id=f"hn:{author}" if author else None,
        author_handle=author,
        published_at=datetime.fromtimestamp(int(hit["created_at_i"]), UTC),
        conversation_id=f"hn:{story_id}" if story_id else None,
    )


def _retry_at(response: Response, now: datetime) -> datetime | None:
    """When a 429 says to come back: Retry-After in seconds or as an HTTP date."""
    value = (response.headers.get("retry-after") or "").strip()
    if value.isdigit():
        return now + timedelta(seconds=int(value))
    if value:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


@dataclass(slots=True)
class _Walk:
    """Where a poll's walk down the search results stands; saved as the cursor between pages.

    `since`/`seen`: the position of the last finished walk. `floor`: how far down this walk goes.
    `until`/`page`: the next request (`created_at_i<=until`, at that page). `newest`: the top of
    this walk, the next `since`. `handed`: hits this walk already handed over near its top (the
    next `seen`) or at its bottom edge (skipped when the next request fetches that second again).
    """

    since: int
    seen: dict[str, int]
    floor: int
    until: int | None = None
    page: int = 0
    newest: int | None = None
    handed: dict[str, int] = field(default_factory=dict)

    @classmethod
    def resume(cls, cursor: dict[str, Any], start: int, overlap: int) -> _Walk:
        """The walk in progress in `cursor`, or a new one from its `since` (first poll: `start`)."""
        since = cursor.get("since")
        since = since if isinstance(since, int) else start
        return cls(
            since=since,
            seen=dict(cursor.get("seen") or {}),
            floor=int(cursor.get("floor", since - overlap)),
            until=cursor.get("until"),
            page=int(cursor.get("page", 0)),
            newest=cursor.get("newest"),
            handed=dict(cursor.get("handed") or {}),
        )

    def advance(self, hits: list[dict[str, Any]], overlap: int) -> list[dict[str, Any]]:
        """Take one page (newest first); return the hits not handed over before."""
        fresh = [
            h for h in hits if str(h["objectID"]) not in self.seen and str(h["objectID"]) not in self.handed
        ]
        if not hits:
            return fresh
        stamps = {str(h["objectID"]): _ts(h) or 0 for h in hits}
        newest = max(self.newest or 0, *stamps.values())
        oldest = min(stamps.values())
        self.newest = newest
        self.handed = {
            key: ts for key, ts in (self.handed | stamps).items() if ts >= newest - overlap or ts == oldest
        }
        if oldest == self.until:
            self.page += 1  # a whole page in one second: step through it by page number
        else:
            self.until, self.page = oldest, 0
        return fresh

    def cursor(self) -> dict[str, Any]:
        """Mid-walk: the old position plus where to go on."""
        return {
            "since": self.since,
            "seen": self.seen,
            "floor": self.floor,
            "until": self.until,
            "page": self.page,
            "newest": self.newest,
            "handed": _newest(self.handed),
        }

    def finished(self, overlap: int) -> dict[str, Any]:
        """Walk done: `since` moves to its newest hit; `seen` keeps the hits within `overlap` of it."""
        top = self.newest if self.newest is not None and self.newest > self.since else self.since
        seen = {key: ts for key, ts in (self.seen | self.handed).items() if ts >= top - overlap}
        return {"since": top, "seen": _newest(seen)}


class HackerNewsSource(Source):
    type = "hackernews"
    Config = HackerNewsConfig
    config: HackerNewsConfig

    def __init__(
        self,
        config: HackerNewsConfig,
        brands: Sequence[Any] = (),
        fetcher: Fetcher | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        super().__init__(config, brands)
        self._fetcher = fetcher or Fetcher(timeout=config.timeout.total_seconds())
        self._clock = clock

    def disabled_reason(self) -> str | None:
        if not self.config.enabled:
            return "disabled in config (enabled: false)"
        if not self.streams():
            return "nothing to search: give the source a query or brands with names"
        return None

    def streams(self) -> list[str]:
        if self.config.query:
            return [self.config.query]
        wanted = set(self.config.brands)
        return default_queries([b for b in self.brands if not wanted or b.name in wanted])

    def fetch(self, stream: str, cursor: dict[str, Any], limit: int | None = None) -> Iterator[Batch]:
        """Walk newest first down to `since - overlap`; `since` moves only when the walk ends."""
        overlap = int(self.config.overlap.total_seconds())
        start = int((self._clock() - self.config.lookback).timestamp())
        walk = _Walk.resume(cursor, start, overlap)
        remaining = limit
        for _request in range(self.config.max_pages):
            if remaining is not None and remaining < 1:
                return  # the monthly cap would be exceeded by another page
            size = (
                self.config.hits_per_page if remaining is None else min(self.config.hits_per_page, remaining)
            )
            body = self._search(stream, walk.floor, walk.until, walk.page, size)
            hits = [
                h for h in body["hits"] if isinstance(h, dict) and h.get("objectID") and _ts(h) is not None
            ]
            page = walk.page
            fresh = walk.advance(hits, overlap)
            if remaining is not None:
                remaining -= len(body["hits"])
            done = len(body["hits"]) < size or not hits
            warning = None
            total = body.get("nbHits")
            if page and not body["hits"] and isinstance(total, int) and total > page * size:
                warning = (
                    f"Algolia stopped paginating at page {page} with more than {page * size} hits at "
                    f"created_at_i={walk.until}: some of them may be missing"
                )
            yield Batch(
                stream=stream,
                cursor=walk.finished(overlap) if done else walk.cursor(),
                mentions=[hit_to_mention(self.name, h) for h in fresh],
                reads=len(body["hits"]),
                warning=warning,
            )
            if done:
                return

    def _search(self, query: str, floor: int, until: int | None, page: int, size: int) -> dict[str, Any]:
        """One search_by_date request; every failure becomes a SourceError saying what to do."""
        where = f"source {self.name}"
        filters = f"created_at_i>={floor}" + (f",created_at_i<={until}" if until is not None else "")
        params = {
            "query": query,
            "tags": self.config.tags,
            "numericFilters": filters,
            "hitsPerPage": size,
            "page": page,
        }
        url = f"{self.config.api_url.rstrip('/')}/search_by_date?{urlencode(params)}"
        try:
            response = self._fetcher.get(url, {"Accept": "application/json"})
        except SourceError as exc:
            raise type(exc)(f"{where}: {exc}", retry_at=exc.retry_at) from exc
        if response.status == 429:
            retry_at = _retry_at(response, self._clock())
            until_text = retry_at.isoformat() if retry_at else "later"
            raise RetriableSourceError(
                f"{where}: Hacker News search rate limit reached (429); retrying {until_text}",
                retry_at=retry_at,
            )
        if response.status == 400:
            raise FatalSourceError(
                f"{where}: Algolia rejected the search {query!r} (HTTP 400); check the source's query and tags"
            )
        try:
            raise_for_status(response)
        except SourceError as exc:
            raise type(exc)(f"{where}: {exc}", retry_at=exc.retry_at) from None
        try:
            body = json.loads(response.body)
        except ValueError:
            raise RetriableSourceError(
                f"{where}: Hacker News search returned malformed JSON; will retry"
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("hits"), list):
            raise RetriableSourceError(
                f"{where}: Hacker News search returned an unexpected payload; will retry"
            )
        return body

    def close(self) -> None:
        self._fetcher.close()


def _ts(hit: dict[str, Any]) -> int | None:
    value = hit.get("created_at_i")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _newest(ids: dict[str, int]) -> dict[str, int]:
    """At most MAX_SEEN ids, the newest kept: the cursor stays small."""
    if len(ids) <= MAX_SEEN:
        return ids
    return dict(sorted(ids.items(), key=lambda item: item[1], reverse=True)[:MAX_SEEN])
