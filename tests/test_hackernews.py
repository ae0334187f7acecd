"""Hacker News source against a real local HTTP server that answers like Algolia's HN search API.

The hits are recorded-shape `search_by_date` responses under tests/fixtures/hackernews/ (the
fields, HTML escaping and `_tags` of hn.algolia.com/api/v1). `FakeAlgolia` serves them the way
Algolia does: newest first, `numericFilters` on `created_at_i` (comma = AND), the words of the
query ANDed (a quoted query as a phrase), `hitsPerPage`/`page`, and pagination cut at a limit
(1000 hits at Algolia; smaller here, so a backlog larger than the cap fits in a test).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from monitor.analysis.text import fold
from monitor.collector import Collector
from monitor.config import Settings, settings_from_dict
from monitor.errors import FatalSourceError, RetriableSourceError
from monitor.mention import Mention
from monitor.sources import build_source
from monitor.sources.hackernews import HackerNewsConfig, HackerNewsSource, default_queries, hit_to_mention
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.tables import MentionRow, SourceStateRow

FIXTURES = Path(__file__).parent / "fixtures" / "hackernews"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PHRASE = '"Bouygues Telecom"'
ALIAS = "BouyguesTelecom"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def recorded_hits() -> list[dict[str, Any]]:
    return [
        *recorded("search_by_date_bouygues_telecom.json")["hits"],
        *recorded("search_by_date_bouyguestelecom.json")["hits"],
    ]


def ts(when: str) -> int:
    return int(datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp())


BASE = ts("2026-11-20T06:00:00")  # the synthetic backlogs start here


def comment(object_id: int, created: int, text: str = "Bouygues Telecom again") -> dict[str, Any]:
    """A comment hit shaped like the recorded ones."""
    return {
        "_tags": ["comment", "author_someone", "story_46000001"],
        "author": "someone",
        "comment_text": text,
        "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "created_at_i": created,
        "objectID": str(object_id),
        "parent_id": 46000001,
        "story_id": 46000001,
        "story_title": "Ask HN: Which French ISP?",
        "story_url": None,
        "updated_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@dataclass
class Reply:
    """A scripted answer instead of search results: status, headers, raw body, or a stall."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass
class FakeAlgolia:
    hits: list[dict[str, Any]]
    pagination_limit: int = 1000
    requests: list[dict[str, str]] = field(default_factory=list)
    script: dict[int, Reply] = field(default_factory=dict)  # request number (0-based) -> reply
    url: str = ""

    def params(self, name: str) -> list[str]:
        return [r[name] for r in self.requests]

    def search(self, params: dict[str, str]) -> dict[str, Any]:
        words = params.get("query", "")
        phrase = words.startswith('"') and words.endswith('"')
        terms = _tokens(words)
        matched = []
        for hit in self.hits:
            text = " ".join(
                str(hit.get(k) or "") for k in ("title", "story_text", "comment_text", "url", "author")
            )
            tokens = _tokens(text)
            found = f" {' '.join(terms)} " in f" {' '.join(tokens)} " if phrase else set(terms) <= set(tokens)
            if found and _numeric_ok(hit["created_at_i"], params.get("numericFilters", "")):
                matched.append(hit)
        matched.sort(key=lambda h: (h["created_at_i"], h["objectID"]), reverse=True)
        size = int(params.get("hitsPerPage", "20"))
        page = int(params.get("page", "0"))
        reachable = matched[: self.pagination_limit]
        return {
            "exhaustive": {"nbHits": True, "typo": True},
            "exhaustiveNbHits": True,
            "exhaustiveTypo": True,
            "hits": copy.deepcopy(reachable[page * size : (page + 1) * size]),
            "hitsPerPage": size,
            "nbHits": len(matched),
            "nbPages": math.ceil(len(reachable) / size),
            "page": page,
            "params": "&".join(f"{k}={v}" for k, v in params.items()),
            "processingTimeMS": 1,
            "query": words,
            "serverTimeMS": 2,
        }


def _tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", fold(text)).split()


def _numeric_ok(value: int, filters: str) -> bool:
    for condition in filter(None, filters.split(",")):
        match = re.fullmatch(r"created_at_i(>=|<=|>|<|=)(\d+)", condition)
        assert match, f"unexpected numericFilters {filters!r}"
        op, bound = match.group(1), int(match.group(2))
        ok = {
            ">=": value >= bound,
            "<=": value <= bound,
            ">": value > bound,
            "<": value < bound,
            "=": value == bound,
        }[op]
        if not ok:
            return False
    return True


@pytest.fixture
def algolia() -> Iterator[FakeAlgolia]:
    fake = FakeAlgolia(recorded_hits())
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            with lock:
                number = len(fake.requests)
                fake.requests.append(params)
                reply = fake.script.get(number)
            if parts.path != "/api/v1/search_by_date":
                reply = Reply(404, body=b'{"message":"Not Found","status":404}')
            if reply is None:
                reply = Reply(body=json.dumps(fake.search(params)).encode())
            time.sleep(reply.delay)
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(
                BrokenPipeError, ConnectionResetError
            ):  # the timeout test's client gave up
                self.wfile.write(reply.body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def make_source(algolia: FakeAlgolia, brands: tuple[Any, ...]) -> Iterator[Callable[..., HackerNewsSource]]:
    made: list[HackerNewsSource] = []

    def build(**overrides: Any) -> HackerNewsSource:
        config = HackerNewsConfig.model_validate({"name": "hn", "api_url": algolia.url, **overrides})
        made.append(HackerNewsSource(config, brands, clock=lambda: NOW))
        return made[-1]

    yield build
    for source in made:
        source.close()


def poll(
    source: HackerNewsSource, stream: str, cursor: dict[str, Any]
) -> tuple[list[Mention], dict[str, Any]]:
    """Run one poll to the end: the mentions of every batch and the last cursor."""
    mentions: list[Mention] = []
    for batch in source.fetch(stream, cursor):
        mentions.extend(batch.mentions)
        cursor = batch.cursor
    return mentions, cursor


def ids(mentions: list[Mention]) -> list[str]:
    return [m.external_id for m in mentions]


# --- queries and mapping ----------------------------------------------------------------------


def test_default_streams_are_one_query_per_brand_term(make_source: Callable[..., HackerNewsSource]) -> None:
    # "Bouygues Télécom" is the same query as "Bouygues Telecom" to Algolia (accents ignored).
    assert make_source().streams() == [PHRASE, ALIAS]
    assert make_source(query="bouygues box").streams() == ["bouygues box"]
    assert make_source(brands=["Someone Else"]).streams() == []
    assert make_source(brands=["Someone Else"]).disabled_reason() == (
        "nothing to search: give the source a query or brands with names"
    )
    assert make_source().disabled_reason() is None


def test_default_queries_quote_multi_word_terms_and_drop_stray_quotes(brands: tuple[Any, ...]) -> None:
    other = settings_from_dict(
        {"database": "sqlite://", "brands": [{"name": 'The "Box"', "aliases": ["box", "BOX", "Box TV"]}]}
    ).brands
    assert default_queries(brands) == [PHRASE, ALIAS]
    assert default_queries(other) == ['"The Box"', "box", '"Box TV"']


def test_stories_and_comments_become_mentions(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    mentions, _ = poll(make_source(), PHRASE, {})

    assert ids(mentions) == ["46001230", "46001200", "46001050", "46001001", "46000900"]
    by_id = {m.external_id: m for m in mentions}
    story = by_id["46001001"]
    assert (
        story.url
        == "https://www.lemonde.fr/economie/article/2026/11/20/panne-bouygues-telecom_6312345_3234.html"
    )
    assert story.title == story.text == "Bouygues Telecom outage takes down fixed lines across France"
    assert (story.author_handle, story.author_id, story.conversation_id) == (
        "mfournier",
        "hn:mfournier",
        "hn:46001001",
    )
    assert story.published_at == datetime(2026, 11, 20, 9, 14, 7, tzinfo=UTC)

    reply = by_id["46001050"]
    assert reply.url == "https://news.ycombinator.com/item?id=46001050"
    assert reply.title == "Bouygues Telecom outage takes down fixed lines across France"
    assert reply.text == (
        'My Bouygues Telecom box has been down since 6am. Support says "we\'re aware".\n'
        "Tethering on 4G for now, see https://www.bouyguestelecom.fr/incident"
    )
    assert (reply.author_id, reply.conversation_id) == ("hn:throwaway_fr", "hn:46001001")

    ask = by_id["46001200"]
    assert ask.url == "https://news.ycombinator.com/item?id=46001200"  # Ask HN: no external link
    assert ask.text.startswith("They raised my fiber plan by 5 €/month with a one-line e-mail.\nIs anyone")
    assert "<" not in ask.text and "actually answers" in ask.text
    assert all(m.source == "hn" and m.published_at and m.published_at.tzinfo for m in mentions)


def test_titles_are_plain_text_and_only_comment_and_story_texts_are_html() -> None:
    story = {
        "_tags": ["story", "author_pg", "story_1"],
        "author": "pg",
        "created_at_i": BASE,
        "objectID": "1",
        "story_id": None,  # older hits carry no story_id on stories
        "title": "Show HN: <blink> is back & Bouygues Telecom < Orange?",
        "url": "javascript:alert(1)",
    }
    mention = hit_to_mention("hn", story)
    assert mention.title == mention.text == "Show HN: <blink> is back & Bouygues Telecom < Orange?"
    assert mention.url == "https://news.ycombinator.com/item?id=1"  # only http(s) links are kept
    assert mention.conversation_id == "hn:1"


def test_the_request_carries_query_tags_window_and_page_size(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    poll(make_source(hits_per_page=50, tags="story"), ALIAS, {})

    floor = int((NOW - timedelta(days=2, minutes=2)).timestamp())  # lookback, minus the overlap
    assert algolia.requests == [
        {
            "query": ALIAS,
            "tags": "story",
            "numericFilters": f"created_at_i>={floor}",
            "hitsPerPage": "50",
            "page": "0",
        }
    ]


# --- pagination and cursors -------------------------------------------------------------------


def backlog(
    count: int, *, start: int = BASE, step: int = 7, first_id: int = 47000000
) -> list[dict[str, Any]]:
    return [comment(first_id + n, start + n * step) for n in range(count)]


def test_pages_walk_down_by_time_and_the_cursor_moves_after_the_last(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    algolia.hits = backlog(25)
    source = make_source(hits_per_page=10)
    batches = list(source.fetch(PHRASE, {}))

    # Each page after the first starts with the hit at its upper bound again: skipped, not re-sent.
    assert [len(b.mentions) for b in batches] == [10, 9, 6]
    assert sorted(i for b in batches for i in ids(b.mentions)) == [str(47000000 + n) for n in range(25)]
    newest = BASE + 24 * 7
    # Each request asks for what is at or below the oldest hit of the page before.
    assert [r["numericFilters"].split(",")[1:] for r in algolia.requests] == [
        [],
        [f"created_at_i<={BASE + 15 * 7}"],
        [f"created_at_i<={BASE + 6 * 7}"],
    ]
    # Mid-walk the cursor keeps the old position; only the last batch moves it.
    assert all(b.cursor["since"] == int((NOW - timedelta(days=2)).timestamp()) for b in batches[:-1])
    assert batches[1].cursor["until"] == BASE + 6 * 7 and batches[1].cursor["newest"] == newest
    last = batches[-1].cursor
    assert last["since"] == newest and set(last) == {"since", "seen"}
    # `seen`: the hits within the 2-minute overlap below the newest one.
    assert last["seen"] == {
        str(47000000 + n): BASE + n * 7 for n in range(25) if BASE + n * 7 >= newest - 120
    }


def test_a_backlog_beyond_algolias_pagination_cap_is_not_lost(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    """Algolia serves at most 1000 hits of one search (here 20): page numbers alone would stop there."""
    algolia.hits = backlog(55)
    algolia.pagination_limit = 20
    mentions, cursor = poll(make_source(hits_per_page=10, max_pages=50), PHRASE, {})

    assert sorted(ids(mentions)) == [str(47000000 + n) for n in range(55)]
    assert cursor["since"] == BASE + 54 * 7


def test_many_hits_in_one_second_are_stepped_through_by_page(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    algolia.hits = [*backlog(3, start=BASE - 100), *backlog(23, step=0, first_id=48000000)]
    mentions, cursor = poll(make_source(hits_per_page=10, max_pages=20), PHRASE, {})

    assert sorted(ids(mentions)) == sorted(
        [str(47000000 + n) for n in range(3)] + [str(48000000 + n) for n in range(23)]
    )
    assert len(ids(mentions)) == 26  # each once
    assert cursor["since"] == BASE and len(cursor["seen"]) == 26  # the 3 older ones are within the overlap


def test_a_second_fuller_than_algolias_cap_is_reported_not_silently_dropped(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    algolia.hits = backlog(35, step=0)
    algolia.pagination_limit = 20
    batches = list(make_source(hits_per_page=10, max_pages=10).fetch(PHRASE, {}))

    assert sum(len(b.mentions) for b in batches) == 20
    assert batches[-1].warning == (
        f"Algolia stopped paginating at page 2 with more than 20 hits at created_at_i={BASE}: "
        "some of them may be missing"
    )
    assert batches[-1].cursor["since"] == BASE


def test_a_monthly_read_cap_bounds_the_page_size_and_the_poll(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    algolia.hits = backlog(25)
    batches = list(make_source(hits_per_page=10).fetch(PHRASE, {}, limit=15))

    assert [b.reads for b in batches] == [10, 5]
    assert algolia.params("hitsPerPage") == ["10", "5"]
    assert "until" in batches[-1].cursor  # the rest comes next month, from there


def test_max_pages_bounds_a_poll_and_the_next_poll_resumes_there(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    algolia.hits = backlog(25)
    source = make_source(hits_per_page=10, max_pages=1)
    first, cursor = poll(source, PHRASE, {})
    assert len(first) == 10 and "until" in cursor

    # New posts arrive meanwhile: the walk in progress is not disturbed by them.
    algolia.hits += backlog(4, start=BASE + 1000, first_id=49000000)
    second, cursor = poll(source, PHRASE, cursor)
    third, cursor = poll(source, PHRASE, cursor)
    assert "until" not in cursor and cursor["since"] == BASE + 24 * 7
    assert sorted(ids(first + second + third)) == [str(47000000 + n) for n in range(25)]

    # The next walk goes down to the overlap below the old position (2 pages here), then moves.
    later: list[Mention] = []
    for _poll in range(3):
        got, cursor = poll(source, PHRASE, cursor)
        later += got
        if "until" not in cursor:
            break
    assert sorted(ids(later)) == [str(49000000 + n) for n in range(4)]
    assert cursor["since"] == BASE + 1000 + 21 and "until" not in cursor


def test_the_next_poll_gets_a_post_of_the_same_second_and_a_late_indexed_one(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    algolia.hits = backlog(3)
    source = make_source()
    first, cursor = poll(source, PHRASE, {})
    assert cursor == {
        "since": BASE + 14,
        "seen": {"47000000": BASE, "47000001": BASE + 7, "47000002": BASE + 14},
    }

    # Two posts in the newest second, and one created a minute earlier but indexed only now.
    algolia.hits += [comment(47000010, BASE + 14), comment(47000011, BASE - 50)]
    second, cursor = poll(source, PHRASE, cursor)

    assert ids(first) == ["47000002", "47000001", "47000000"]
    assert ids(second) == ["47000010", "47000011"]
    assert algolia.requests[-1]["numericFilters"] == f"created_at_i>={BASE + 14 - 120}"
    assert cursor["since"] == BASE + 14 and set(cursor["seen"]) == {
        "47000000",
        "47000001",
        "47000002",
        "47000010",
        "47000011",
    }
    # Nothing new: nothing handed over, the cursor stays.
    third, again = poll(source, PHRASE, cursor)
    assert third == [] and again == cursor


def test_a_failure_on_page_two_resumes_with_no_gap_and_no_duplicate(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    algolia.hits = backlog(25)
    algolia.script[1] = Reply(503, body=b"<html>Service Unavailable</html>")
    source = make_source(hits_per_page=10)
    handed: list[Mention] = []
    cursor: dict[str, Any] = {}
    with pytest.raises(RetriableSourceError, match=r"source hn: HTTP 503 from .*search_by_date"):
        for batch in source.fetch(PHRASE, cursor):
            handed.extend(batch.mentions)
            cursor = batch.cursor
    assert len(handed) == 10 and cursor["page"] == 0 and cursor["until"] == BASE + 15 * 7

    rest, cursor = poll(source, PHRASE, cursor)
    assert sorted(ids(handed + rest)) == [str(47000000 + n) for n in range(25)]
    assert cursor["since"] == BASE + 24 * 7


# --- faults -----------------------------------------------------------------------------------


def test_a_429_with_retry_after_seconds_says_when(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    algolia.script[0] = Reply(429, {"Retry-After": "90"}, b'{"message":"Too many requests"}')
    with pytest.raises(RetriableSourceError) as caught:
        poll(make_source(), PHRASE, {})
    assert caught.value.retry_at == NOW + timedelta(seconds=90)
    assert str(caught.value) == (
        "source hn: Hacker News search rate limit reached (429); retrying 2026-11-20T12:01:30+00:00"
    )


def test_a_429_with_an_http_date_or_nothing(
    algolia: FakeAlgolia, make_source: Callable[..., HackerNewsSource]
) -> None:
    when = NOW + timedelta(minutes=30)
    algolia.script[0] = Reply(429, {"Retry-After": format_datetime(when, usegmt=True)})
    algolia.script[1] = Reply(429)
    source = make_source()
    with pytest.raises(RetriableSourceError) as dated:
        poll(source, PHRASE, {})
    with pytest.raises(RetriableSourceError, match="retrying later") as bare:
        poll(source, PHRASE, {})
    assert dated.value.retry_at == when and bare.value.retry_at is None


@pytest.mark.parametrize(
    ("reply", "kind", "message"),
    [
        (
            Reply(500, body=b"oops"),
            RetriableSourceError,
            r"^source hn: HTTP 500 from http://127\.0\.0\.1:\d+/api/v1/search_by_date\?query=.* \(server error; will retry\)$",
        ),
        (
            Reply(body=b'{"hits": [ {"objectID": '),
            RetriableSourceError,
            "^source hn: Hacker News search returned malformed JSON; will retry$",
        ),
        (Reply(body=b'{"message": "ok"}'), RetriableSourceError, "unexpected payload; will retry$"),
        (
            Reply(400, body=b'{"message":"invalid numericFilters","status":400}'),
            FatalSourceError,
            r"""^source hn: Algolia rejected the search '"Bouygues Telecom"' \(HTTP 400\); check the source's query and tags$""",
        ),
        (Reply(403), FatalSourceError, r"HTTP 403 from .* \(check the URL and access rights\)$"),
        (Reply(delay=1.5, body=b'{"hits": []}'), RetriableSourceError, r"^source hn: timed out after 0\.5s"),
    ],
    ids=["5xx", "malformed-json", "unexpected-payload", "400", "403", "timeout"],
)
def test_faults_map_to_source_errors(
    algolia: FakeAlgolia,
    make_source: Callable[..., HackerNewsSource],
    reply: Reply,
    kind: type[Exception],
    message: str,
) -> None:
    algolia.script[0] = reply
    with pytest.raises(kind, match=message) as caught:
        poll(make_source(timeout="500ms"), PHRASE, {})
    assert type(caught.value) is kind


def test_a_network_failure_is_retriable(make_source: Callable[..., HackerNewsSource]) -> None:
    source = make_source(api_url="http://127.0.0.1:9/api/v1")  # discard port: nothing listens
    with pytest.raises(
        RetriableSourceError, match=r"^source hn: network error fetching http://127\.0\.0\.1:9/"
    ):
        poll(source, PHRASE, {})


# --- through the collector, on SQLite and PostgreSQL ------------------------------------------


def hn_settings(make_settings: Callable[..., Settings], algolia: FakeAlgolia, **source: Any) -> Settings:
    return make_settings(sources=[{"type": "hackernews", "name": "hn", "api_url": algolia.url, **source}])


def collector_for(settings: Settings, db: Database) -> Collector:
    """A Collector whose source (built from the settings, as the daemon does) lives at NOW."""
    built = build_source(settings.sources[0], settings.brands)
    assert isinstance(built, HackerNewsSource)
    source = HackerNewsSource(built.config, settings.brands, clock=lambda: NOW)
    built.close()
    return Collector(settings, db, sources=[source], clock=lambda: NOW)


def stored(db: Database) -> list[MentionRow]:
    with db.session() as session:
        rows = list(session.scalars(select(MentionRow).order_by(MentionRow.external_id)))
        session.expunge_all()
    return rows


def states(db: Database) -> dict[str, SourceStateRow]:
    with db.session() as session:
        rows = {
            r.stream: r for r in session.scalars(select(SourceStateRow).where(SourceStateRow.source == "hn"))
        }
        session.expunge_all()
    return rows


def test_collection_stores_each_mention_once_with_its_brand_and_saves_the_cursors(
    db: Database, make_settings: Callable[..., Settings], algolia: FakeAlgolia
) -> None:
    collector = collector_for(hn_settings(make_settings, algolia), db)
    try:
        first = collector.collect()
        second = collector.collect()
    finally:
        collector.close()

    assert first.errors == [] and second.errors == []
    rows = stored(db)
    # "French carriers quietly raise fiber prices" names the brand only in its URL: not a mention.
    assert [r.external_id for r in rows] == ["46001001", "46001050", "46001200", "46001230", "46001444"]
    assert {r.brand for r in rows} == {"Bouygues Telecom"}
    assert {r.source for r in rows} == {"hn"}
    assert first.totals.stored == 5 and first.totals.unmatched == 1
    assert second.totals.stored == 0
    saved = states(db)
    assert set(saved) == {PHRASE, ALIAS}
    assert saved[PHRASE].cursor["since"] == ts("2026-11-20T10:05:12")
    assert saved[ALIAS].cursor["since"] == ts("2026-11-20T11:20:03")
    assert all(r.last_error is None for r in saved.values())


def test_a_429_parks_the_stream_until_retry_after_and_keeps_its_cursor(
    db: Database, make_settings: Callable[..., Settings], algolia: FakeAlgolia
) -> None:
    settings = hn_settings(make_settings, algolia, query="Bouygues")
    cursor = {"since": ts("2026-11-20T09:00:00"), "seen": {}}
    with db.session() as session:
        state.record_success(session, "hn", "Bouygues", cursor, NOW - timedelta(hours=1), 0)
    algolia.script[0] = Reply(429, {"Retry-After": "600"})
    collector = collector_for(settings, db)
    try:
        report = collector.collect()
        again = collector.collect()
    finally:
        collector.close()

    assert [line.error for line in report.errors] == [
        "source hn: Hacker News search rate limit reached (429); retrying 2026-11-20T12:10:00+00:00"
    ]
    row = states(db)["Bouygues"]
    assert row.parked_until == NOW + timedelta(minutes=10) and row.cursor == cursor
    assert again.errors == [] and again.streams[0].parked is not None
    assert len(algolia.requests) == 1 and stored(db) == []
