"""Reddit source (PRAW) against Reddit-shaped responses served by `responses` (no network).

The payloads under fixtures/reddit/ follow Reddit's listing JSON (`{"kind": "Listing", "data":
{"after", "children": [{"kind": "t3"|"t1", "data": {...}}]}}`), its OAuth token response and
its error bodies (`{"reason": "private", "message": "Forbidden", "error": 403}`). The source's
clock is pinned to 2024-06-10 12:00 UTC, just after the newest fixture post.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import prawcore.rate_limit
import prawcore.sessions
import pytest
import requests
import responses
from conftest import BRAND
from pydantic import ValidationError
from sqlalchemy import select

from monitor.collector import Collector
from monitor.config import Settings, settings_from_dict
from monitor.errors import AccessRefusedError, FatalSourceError, RetriableSourceError
from monitor.sources.reddit import RedditConfig, RedditSource, default_query, default_user_agent
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.tables import MentionRow, SourceStateRow

FIXTURES = Path(__file__).parent / "fixtures" / "reddit"
TOKEN_URL = "https://www.reddit.com/api/v1/access_token"
API = "https://oauth.reddit.com"
CLIENT_ID = "p-jcoLKBynTLew"
SECRET = "gko_LXELoV07ZBNUXrvWZfzE3aI-never-shown"
PASSWORD = "hunter2-correct-horse-never-shown"
NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
SUBS = ["france", "BouyguesTelecom"]
SEARCH_ALL = f"{API}/r/all/search/"
SEARCH_SUBS = f"{API}/r/france+BouyguesTelecom/search/"
COMMENTS_SUBS = f"{API}/r/france+BouyguesTelecom/comments/"
# What Reddit sends on every OAuth response: requests used / left in the window, seconds to reset.
RATE = {"x-ratelimit-used": "4", "x-ratelimit-remaining": "96.0", "x-ratelimit-reset": "412"}


@cache
def _read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture(name: str) -> dict[str, Any]:
    """A fresh (mutable) copy of one saved payload."""
    return copy.deepcopy(json.loads(_read(name)))


def ids(listing: dict[str, Any]) -> list[str]:
    return [child["data"]["name"] for child in listing["data"]["children"]]


def params(call: Any) -> dict[str, str]:
    query = parse_qs(urlsplit(call.request.url).query, keep_blank_values=True)
    return {key: values[-1] for key, values in query.items()}


def after_sent(value: str | None) -> Callable[[Any], tuple[bool, str]]:
    """A `responses` matcher: the listing request for the first page (None) or after `value`."""

    def match(request: Any) -> tuple[bool, str]:
        sent = parse_qs(urlsplit(request.url).query).get("after", [None])[-1]
        return sent == value, f"after {sent!r} != {value!r}"

    return match


def serve(
    rsps: responses.RequestsMock,
    url: str,
    body: Any,
    *,
    after: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    rsps.add(
        responses.GET,
        url,
        json=body,
        status=status,
        headers=RATE if headers is None else headers,
        match=[after_sent(after)],
    )


def api_calls(rsps: responses.RequestsMock) -> list[Any]:
    return [c for c in rsps.calls if c.request.url.startswith(API)]


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[float]]:
    """prawcore's own sleeps (retry backoff, rate limiter), recorded instead of slept."""
    recorded: dict[str, list[float]] = {"retry": [], "rate_limiter": []}

    class Clock:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def sleep(self, seconds: float) -> None:
            recorded[self.kind].append(seconds)

        monotonic = staticmethod(time.monotonic)
        monotonic_ns = staticmethod(time.monotonic_ns)

    monkeypatch.setattr(prawcore.sessions, "time", Clock("retry"))
    monkeypatch.setattr(prawcore.rate_limit, "time", Clock("rate_limiter"))
    return recorded


@pytest.fixture
def token(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, TOKEN_URL, json=fixture("token.json"))


@pytest.fixture
def make_source(brands: tuple[Any, ...]) -> Iterator[Callable[..., RedditSource]]:
    made: list[RedditSource] = []

    def build(**overrides: Any) -> RedditSource:
        raw = {"name": "reddit", "client_id": CLIENT_ID, "client_secret": SECRET, **overrides}
        source = RedditSource(RedditConfig.model_validate(raw), brands)
        source.clock = lambda: NOW
        made.append(source)
        return source

    yield build
    for source in made:
        source.close()


def reddit_settings(make_settings: Callable[..., Settings], **source: Any) -> Settings:
    entry = {"type": "reddit", "name": "reddit", "client_id": CLIENT_ID, "client_secret": SECRET, **source}
    return make_settings(sources=[entry])


def collector_for(settings: Settings, db: Database) -> Collector:
    collector = Collector(settings, db, clock=lambda: NOW)
    for source in collector.sources:
        assert isinstance(source, RedditSource)
        source.clock = lambda: NOW
    return collector


def stored(db: Database) -> list[MentionRow]:
    with db.session() as session:
        rows = list(session.scalars(select(MentionRow).order_by(MentionRow.id)))
        session.expunge_all()
    return rows


def source_state(db: Database, stream: str) -> SourceStateRow:
    with db.session() as session:
        row = session.scalar(
            select(SourceStateRow).where(SourceStateRow.source == "reddit", SourceStateRow.stream == stream)
        )
        assert row is not None
        session.expunge(row)
    return row


def seed_cursor(db: Database, stream: str, cursor: dict[str, Any]) -> None:
    with db.session() as session:
        state.record_success(session, "reddit", stream, cursor, NOW - timedelta(hours=1), 0)


# --- one page -> Mentions ---------------------------------------------------------------------


def test_a_search_page_becomes_mentions(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    serve(rsps, SEARCH_ALL, fixture("search_page2.json"))

    batches = list(make_source().fetch("search:all", {}))

    assert len(batches) == 1
    by_id = {m.external_id: m for m in batches[0].mentions}
    assert list(by_id) == ["t3_1dcm2b7", "t3_1dck8aa"]
    post = by_id["t3_1dcm2b7"]
    assert post.source == "reddit"
    assert post.url == "https://www.reddit.com/r/BouyguesTelecom/comments/1dcm2b7/bbox_ultym_ou_freebox_pop/"
    assert post.title == "Bbox Ultym ou Freebox Pop ?"
    assert post.text == (
        "Bbox Ultym ou Freebox Pop ?\n\n"
        "Je compare BouyguesTelecom et Free pour un appart à Nantes, des retours sur la stabilité ?"
    )
    assert (post.author_handle, post.author_id) == ("u/comparateur44", "reddit:comparateur44")
    assert post.author_followers is None and post.lang is None
    assert post.published_at == datetime(2024, 6, 10, 8, 0, tzinfo=UTC)
    assert post.conversation_id == "t3_1dcm2b7"
    link = by_id["t3_1dck8aa"]  # a link post: no self text, the title is the text
    assert link.text == link.title == "Bouygues Construction recrute 300 compagnons en Île-de-France"
    assert batches[0].reads == 2


def test_a_removed_post_by_a_deleted_account_keeps_its_title_and_no_author(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    page = fixture("search_page1.json")
    page["data"]["after"] = None
    serve(rsps, SEARCH_ALL, page)

    mentions = {m.external_id: m for b in make_source().fetch("search:all", {}) for m in b.mentions}

    removed = mentions["t3_1dcnz1a"]
    assert removed.text == "Résilier chez Bouygues Télécom, mode d'emploi ?"  # "[removed]" dropped
    assert removed.author_handle is None and removed.author_id is None
    assert mentions["t3_1dcp4xz"].text == "Bouygues Telecom augmente ses forfaits de 2 € en juillet"


def test_the_request_carries_the_default_query_the_credentials_and_the_timeout(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource], brands: Any
) -> None:
    serve(rsps, SEARCH_ALL, fixture("empty.json"))

    batches = list(make_source(timeout="7s", page_size=50).fetch("search:all", {}))

    assert [b.mentions for b in batches] == [[]] and batches[0].cursor == {}
    token_call, search_call = rsps.calls
    assert parse_qs(token_call.request.body) == {"grant_type": ["client_credentials"]}
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert token_call.request.headers["Authorization"] == f"Basic {basic}"
    assert params(search_call) == {
        "q": '"Bouygues Telecom" OR "Bouygues Télécom" OR BouyguesTelecom',
        "sort": "new",
        "syntax": "lucene",
        "t": "all",
        "restrict_sr": "off",
        "limit": "50",
        "raw_json": "1",
    }
    assert params(search_call)["q"] == default_query(brands)
    assert search_call.request.headers["Authorization"] == f"bearer {fixture('token.json')['access_token']}"
    agent = search_call.request.headers["User-Agent"]
    assert agent.startswith(default_user_agent(None)) and "PRAW/" in agent
    assert [c.request.req_kwargs["timeout"] for c in rsps.calls] == [7.0, 7.0]


def test_subreddits_restrict_the_search_and_a_configured_query_replaces_the_default(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    serve(rsps, SEARCH_SUBS, fixture("empty.json"))
    source = make_source(subreddits=["r/france", "BouyguesTelecom"], query='title:"Bbox" OR "B&You"')

    list(source.fetch("search:france+BouyguesTelecom", {}))

    sent = params(api_calls(rsps)[0])
    assert sent["q"] == 'title:"Bbox" OR "B&You"'
    assert sent["restrict_sr"] == "on"


def test_a_script_app_logs_in_with_the_password_and_names_the_account_in_its_user_agent(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    serve(rsps, SEARCH_ALL, fixture("empty.json"))

    list(make_source(username="u/brand_watch", password=PASSWORD).fetch("search:all", {}))

    assert parse_qs(rsps.calls[0].request.body) == {
        "grant_type": ["password"],
        "password": [PASSWORD],
        "username": ["brand_watch"],
    }
    agent = api_calls(rsps)[0].request.headers["User-Agent"]
    assert agent.startswith("python:monitor:") and "(by u/brand_watch)" in agent


# --- pagination and the seen-id cursor --------------------------------------------------------


def test_pages_are_followed_and_each_batch_carries_a_resumable_cursor(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    first, last = fixture("search_page1.json"), fixture("search_page2.json")
    serve(rsps, SEARCH_ALL, first)
    serve(rsps, SEARCH_ALL, last, after="t3_1dcnz1a")

    batches = list(make_source().fetch("search:all", {}))

    assert [[m.external_id for m in b.mentions] for b in batches] == [ids(first), ids(last)]
    newest = 1718019900.0  # 11:45, the first post of the first page
    assert batches[0].cursor == {
        "floor": (NOW - timedelta(days=7)).timestamp(),  # a first poll reads back `backfill`
        "after": "t3_1dcnz1a",
        "pass_newest": newest,
        "pass_seen": {"t3_1dcq9k2": newest, "t3_1dcp4xz": 1718017200.0},
    }
    # The pass is over: the position moves to the newest post, and remembers the last hour's.
    assert batches[1].cursor == {
        "newest": newest,
        "seen": {"t3_1dcq9k2": newest, "t3_1dcp4xz": 1718017200.0},
    }
    assert [params(c).get("after") for c in api_calls(rsps)] == [None, "t3_1dcnz1a"]


def test_the_next_poll_stops_at_the_saved_position_and_skips_what_it_already_sent(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    page = fixture("search_page1.json")  # has an `after`: stopping is the cursor's doing
    fresh = copy.deepcopy(page["data"]["children"][0])
    fresh["data"].update(
        name="t3_1dcr7fe", id="1dcr7fe", created_utc=1718020740.0, title="Bouygues Telecom 5G"
    )
    late = copy.deepcopy(page["data"]["children"][1])  # indexed late: older than the position
    late["data"].update(name="t3_1dcq1zz", id="1dcq1zz", created_utc=1718019000.0)
    page["data"]["children"] = [fresh, page["data"]["children"][0], late, *page["data"]["children"][1:]]
    serve(rsps, SEARCH_ALL, page)
    cursor = {"newest": 1718019900.0, "seen": {"t3_1dcq9k2": 1718019900.0, "t3_1dcp4xz": 1718017200.0}}

    batches = list(make_source().fetch("search:all", cursor))

    # New: the fresh post and the late one; t3_1dcq9k2 and t3_1dcp4xz were sent already;
    # t3_1dcnz1a (10:00) is older than the position minus the hour read again: the pass ends.
    assert [m.external_id for m in batches[0].mentions] == ["t3_1dcr7fe", "t3_1dcq1zz"]
    assert len(api_calls(rsps)) == 1
    assert batches[0].cursor == {
        "newest": 1718020740.0,
        "seen": {
            "t3_1dcr7fe": 1718020740.0,
            "t3_1dcq9k2": 1718019900.0,
            "t3_1dcq1zz": 1718019000.0,
            "t3_1dcp4xz": 1718017200.0,  # within the hour below the new position: kept
        },
    }


def test_pagination_stops_at_max_pages_and_the_next_poll_resumes_there(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    first, last = fixture("search_page1.json"), fixture("search_page2.json")
    serve(rsps, SEARCH_ALL, first)
    source = make_source(max_pages=1)

    batches = list(source.fetch("search:all", {}))

    assert len(batches) == 1 and len(api_calls(rsps)) == 1
    cursor = batches[0].cursor
    assert cursor["after"] == "t3_1dcnz1a"

    serve(rsps, SEARCH_ALL, last, after="t3_1dcnz1a")
    resumed = list(source.fetch("search:all", cursor))

    assert [m.external_id for m in resumed[0].mentions] == ids(last)
    assert params(api_calls(rsps)[-1])["after"] == "t3_1dcnz1a"
    assert resumed[0].cursor["newest"] == 1718019900.0 and "after" not in resumed[0].cursor


def test_the_first_poll_reads_back_only_the_backfill_window(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    serve(rsps, SEARCH_ALL, fixture("search_page1.json"))

    batches = list(make_source(backfill="90m").fetch("search:all", {}))

    assert [m.external_id for m in batches[0].mentions] == ["t3_1dcq9k2", "t3_1dcp4xz"]  # 11:45, 11:00
    assert len(api_calls(rsps)) == 1
    assert batches[0].cursor["newest"] == 1718019900.0


def test_a_monthly_read_cap_bounds_the_page_size_and_the_pages(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    serve(rsps, SEARCH_ALL, fixture("search_page1.json"))

    batches = list(make_source().fetch("search:all", {}, limit=3))

    assert params(api_calls(rsps)[0])["limit"] == "3"
    assert len(api_calls(rsps)) == 1 and [b.reads for b in batches] == [3]
    assert batches[0].cursor["after"] == "t3_1dcnz1a"  # resumes there next month


# --- comments ---------------------------------------------------------------------------------


def test_streams_scan_comments_only_when_subreddits_are_set(make_source: Callable[..., RedditSource]) -> None:
    assert make_source().streams() == ["search:all"]
    assert make_source(subreddits=SUBS).streams() == [
        "search:france+BouyguesTelecom",
        "comments:france+BouyguesTelecom",
    ]
    assert make_source(subreddits=SUBS, comments=False).streams() == ["search:france+BouyguesTelecom"]


def test_new_comments_naming_the_brand_become_mentions(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    serve(rsps, COMMENTS_SUBS, fixture("comments_page1.json"))
    serve(rsps, COMMENTS_SUBS, fixture("comments_page2.json"), after="t1_l7xh7bb")

    batches = list(make_source(subreddits=SUBS).fetch("comments:france+BouyguesTelecom", {}))

    # Kept: comments naming the brand (any alias, any case or accent). Dropped: the one about
    # Marseille, the removed one, and "Bouygues Construction" (an exclusion of the brand).
    assert [[m.external_id for m in b.mentions] for b in batches] == [
        ["t1_l7xk2p1", "t1_l7xh7bb"],
        ["t1_l7xe4dd"],
    ]
    assert [b.reads for b in batches] == [4, 2]
    first = batches[0].mentions[0]
    assert first.text == "Chez Bouygues Telecom le SAV m'a raccroché au nez trois fois. Je résilie."
    assert first.url == (
        "https://www.reddit.com/r/france/comments/1dcq9k2/panne_fibre_bouygues_telecom_à_lyon/l7xk2p1/"
    )
    assert first.title is None
    assert first.conversation_id == "t3_1dcq9k2"  # the submission it answers
    assert (first.author_handle, first.author_id) == ("u/client_mecontent", "reddit:client_mecontent")
    assert first.published_at == datetime(2024, 6, 10, 11, 55, tzinfo=UTC)
    deleted = batches[0].mentions[1]
    assert deleted.author_handle is None and deleted.conversation_id == "t3_1dcm2b7"
    assert params(api_calls(rsps)[0]) == {"limit": "100", "raw_json": "1"}
    # Seen: the comments sent within the hour below the newest comment read (11:55).
    assert batches[-1].cursor == {
        "newest": 1718020500.0,
        "seen": {"t1_l7xk2p1": 1718020500.0, "t1_l7xh7bb": 1718018000.0},
    }


# --- cursor safety through the collector (SQLite and PostgreSQL) ------------------------------


def test_a_poll_stores_brand_mentions_once_and_saves_each_streams_cursor(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock, token: None
) -> None:
    serve(rsps, SEARCH_SUBS, fixture("search_page1.json"))
    serve(rsps, SEARCH_SUBS, fixture("search_page2.json"), after="t3_1dcnz1a")
    serve(rsps, COMMENTS_SUBS, fixture("comments_page1.json"))
    serve(rsps, COMMENTS_SUBS, fixture("comments_page2.json"), after="t1_l7xh7bb")
    collector = collector_for(reddit_settings(make_settings, subreddits=SUBS), db)
    try:
        report = collector.collect()

        assert report.errors == [] and report.skipped == {}
        rows = {r.external_id: r for r in stored(db)}
        # Every post naming Bouygues Telecom; not "Bouygues Construction recrute..." (excluded).
        assert list(rows) == [
            "t3_1dcq9k2",
            "t3_1dcp4xz",
            "t3_1dcnz1a",
            "t3_1dcm2b7",
            "t1_l7xk2p1",
            "t1_l7xh7bb",
            "t1_l7xe4dd",
        ]
        assert {r.brand for r in rows.values()} == {"Bouygues Telecom"}
        assert rows["t1_l7xk2p1"].conversation_id == "t3_1dcq9k2"
        assert rows["t3_1dcq9k2"].author_handle == "u/lyon_fibre"
        search = source_state(db, "search:france+BouyguesTelecom")
        assert search.cursor["newest"] == 1718019900.0 and search.last_error is None
        assert source_state(db, "comments:france+BouyguesTelecom").cursor["newest"] == 1718020500.0

        # The next poll reads again down to an hour below each position, and no further: nothing
        # is sent twice. (The first comments page is all within that hour, so page 2 is read too.)
        rsps.reset()
        serve(rsps, SEARCH_SUBS, fixture("search_page1.json"))
        serve(rsps, COMMENTS_SUBS, fixture("comments_page1.json"))
        serve(rsps, COMMENTS_SUBS, fixture("comments_page2.json"), after="t1_l7xh7bb")
        report = collector.collect()

        assert report.errors == []
        assert report.totals.stored == 0 and report.totals.received == 0
        assert [(urlsplit(c.request.url).path, params(c).get("after")) for c in rsps.calls] == [
            ("/r/france+BouyguesTelecom/search/", None),
            ("/r/france+BouyguesTelecom/comments/", None),
            ("/r/france+BouyguesTelecom/comments/", "t1_l7xh7bb"),
        ]  # the access token is still valid: not asked again
        assert len(stored(db)) == len(rows)
    finally:
        collector.close()


def test_a_failure_mid_pagination_resumes_with_no_gap_and_no_duplicate(
    db: Database,
    make_settings: Callable[..., Settings],
    rsps: responses.RequestsMock,
    token: None,
    sleeps: dict[str, list[float]],
) -> None:
    first, last = fixture("search_page1.json"), fixture("search_page2.json")
    old = {"newest": 1717990000.0, "seen": {"t3_1dcj000": 1717990000.0}}
    seed_cursor(db, "search:all", old)
    collector = collector_for(reddit_settings(make_settings), db)
    try:
        serve(rsps, SEARCH_ALL, first)
        serve(
            rsps, SEARCH_ALL, {"message": "Service Unavailable", "error": 503}, after="t3_1dcnz1a", status=503
        )
        report = collector.collect()

        message = "source reddit: Reddit server error (503); will retry"
        assert [e.error for e in report.errors] == [message]
        assert [r.external_id for r in stored(db)] == ids(first)
        row = source_state(db, "search:all")
        assert row.last_error == message and row.consecutive_errors == 1
        assert row.cursor["after"] == "t3_1dcnz1a"
        assert (row.cursor["newest"], row.cursor["seen"]) == (old["newest"], old["seen"])
        assert len(api_calls(rsps)) == 4  # page 1, then page 2 tried three times by prawcore
        assert len(sleeps["retry"]) == 2 and sleeps["rate_limiter"] == []

        rsps.reset()
        serve(rsps, SEARCH_ALL, last, after="t3_1dcnz1a")
        report = collector.collect()

        assert report.errors == []
        assert [params(c)["after"] for c in api_calls(rsps)] == ["t3_1dcnz1a"]
        got = [r.external_id for r in stored(db)]
        assert got == [*ids(first), "t3_1dcm2b7"]  # "Bouygues Construction recrute" is no mention
        assert len(got) == len(set(got))
        row = source_state(db, "search:all")
        assert row.cursor == {
            "newest": 1718019900.0,
            "seen": {"t3_1dcq9k2": 1718019900.0, "t3_1dcp4xz": 1718017200.0},
        }
        assert row.last_error is None and row.consecutive_errors == 0
    finally:
        collector.close()


# --- rate limits ------------------------------------------------------------------------------


def test_a_used_up_window_stops_the_poll_until_the_reset_instead_of_sleeping(
    rsps: responses.RequestsMock,
    token: None,
    make_source: Callable[..., RedditSource],
    sleeps: dict[str, list[float]],
) -> None:
    spent = {"x-ratelimit-used": "100", "x-ratelimit-remaining": "0.0", "x-ratelimit-reset": "300"}
    serve(rsps, SEARCH_ALL, fixture("search_page1.json"), headers=spent)
    serve(rsps, SEARCH_ALL, fixture("search_page2.json"), after="t3_1dcnz1a")
    source = make_source()
    batches: list[Any] = []

    with pytest.raises(RetriableSourceError) as caught:
        batches.extend(source.fetch("search:all", {}))

    assert [m.external_id for m in batches[0].mentions] == ids(fixture("search_page1.json"))
    assert caught.value.retry_at == NOW + timedelta(seconds=300)
    assert "rate limit used up" in str(caught.value) and "2024-06-10T12:05:00+00:00" in str(caught.value)
    assert len(api_calls(rsps)) == 1
    assert sleeps == {"retry": [], "rate_limiter": []}


def test_a_429_parks_the_stream_until_the_reset(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock, token: None
) -> None:
    limited = {"x-ratelimit-used": "101", "x-ratelimit-remaining": "0.0", "x-ratelimit-reset": "245"}
    serve(rsps, SEARCH_ALL, fixture("error_429.json"), status=429, headers=limited)
    seed_cursor(db, "search:all", {"newest": 1718019900.0})
    collector = collector_for(reddit_settings(make_settings), db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    reset = NOW + timedelta(seconds=245)
    assert report.errors[0].error == (
        f"source reddit: Reddit API rate limit reached (429); resets at {reset.isoformat()}"
    )
    row = source_state(db, "search:all")
    assert row.parked_until == reset and row.next_poll_at == reset
    assert row.cursor == {"newest": 1718019900.0}
    assert len(api_calls(rsps)) == 1  # a 429 is not retried by prawcore


def test_a_429_without_reset_header_still_says_when(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    serve(rsps, SEARCH_ALL, fixture("error_429.json"), status=429, headers={})

    with pytest.raises(RetriableSourceError, match="resets at later") as caught:
        list(make_source().fetch("search:all", {}))
    assert caught.value.retry_at is None


# --- faults -----------------------------------------------------------------------------------


def test_app_credentials_refused_park_the_source_until_its_settings_change(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.POST, TOKEN_URL, json=fixture("error_401.json"), status=401)
    collector = collector_for(reddit_settings(make_settings), db)
    try:
        report = collector.collect()
        again = collector.collect()
    finally:
        collector.close()

    message = report.errors[0].error or ""
    assert "refused the app credentials (401)" in message
    assert "REDDIT_CLIENT_ID" in message and "REDDIT_CLIENT_SECRET" in message
    assert SECRET not in message
    row = source_state(db, "search:all")
    assert row.parked_reason == message and row.parked_until is None and row.config_fingerprint
    assert again.streams[0].parked is not None and "settings change" in again.streams[0].parked
    assert len(rsps.calls) == 1  # the parked stream is not tried again


def test_a_wrong_password_is_refused_with_what_to_check(
    rsps: responses.RequestsMock, make_source: Callable[..., RedditSource]
) -> None:
    rsps.add(responses.POST, TOKEN_URL, json=fixture("token_invalid_grant.json"))  # Reddit says 200

    with pytest.raises(AccessRefusedError) as caught:
        list(make_source(username="brand_watch", password=PASSWORD).fetch("search:all", {}))

    assert "invalid_grant" in str(caught.value) and "REDDIT_PASSWORD" in str(caught.value)
    assert PASSWORD not in str(caught.value) and SECRET not in str(caught.value)


def test_a_token_refused_by_the_api_is_access_refused(
    rsps: responses.RequestsMock, token: None, make_source: Callable[..., RedditSource]
) -> None:
    rsps.add(
        responses.GET,
        SEARCH_ALL,
        json=fixture("error_401.json"),
        status=401,
        headers={"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'},
    )

    with pytest.raises(AccessRefusedError, match=r"refused the app credentials \(401\)"):
        list(make_source().fetch("search:all", {}))
    assert len(api_calls(rsps)) == 3  # prawcore fetched a new token and tried twice more


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "expected"),
    [
        (
            403,
            "error_403_private.json",
            {},
            FatalSourceError,
            "r/france+BouyguesTelecom is private (403); remove it from subreddits",
        ),
        (
            404,
            "error_404_banned.json",
            {},
            FatalSourceError,
            "r/france+BouyguesTelecom is banned (404); check subreddits",
        ),
        (
            302,
            None,
            {"location": "https://oauth.reddit.com/subreddits/search.json?q=france"},
            FatalSourceError,
            "r/france+BouyguesTelecom does not exist (Reddit redirected to /subreddits/search)",
        ),
        (403, {"message": "Forbidden", "error": 403}, {}, AccessRefusedError, "forbids this request (403)"),
        (
            500,
            {"message": "Internal Server Error", "error": 500},
            {},
            RetriableSourceError,
            "server error (500)",
        ),
        (400, {"message": "Bad Request", "error": 400}, {}, FatalSourceError, "rejected the search query"),
    ],
    ids=["private", "banned", "unknown-subreddit", "forbidden", "5xx", "bad-query"],
)
def test_api_errors_map_to_source_errors_that_say_what_to_do(
    rsps: responses.RequestsMock,
    token: None,
    make_source: Callable[..., RedditSource],
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: type[Exception],
    expected: str,
) -> None:
    payload = fixture(body) if isinstance(body, str) else body
    rsps.add(responses.GET, SEARCH_SUBS, json=payload, status=status, headers={**RATE, **headers})

    with pytest.raises(kind) as caught:
        list(make_source(subreddits=SUBS).fetch("search:france+BouyguesTelecom", {}))

    assert type(caught.value) is kind
    assert expected in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (requests.ReadTimeout("read timed out"), "Reddit timed out after 30s; will retry"),
        (requests.ConnectionError(f"boom {SECRET}"), "network error calling Reddit: ConnectionError"),
    ],
    ids=["timeout", "network"],
)
def test_network_failures_are_retriable(
    rsps: responses.RequestsMock,
    token: None,
    make_source: Callable[..., RedditSource],
    failure: Exception,
    expected: str,
) -> None:
    rsps.add(responses.GET, SEARCH_ALL, body=failure)

    with pytest.raises(RetriableSourceError) as caught:
        list(make_source().fetch("search:all", {}))

    assert str(caught.value) == f"source reddit: {expected}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<html><body>Our CDN was unable to reach our servers</body></html>", "malformed JSON"),
        ('{"kind": "t5", "data": {"display_name": "france"}}', "unexpected payload"),
        ('["not", "a", "listing"]', "unexpected payload"),
    ],
    ids=["html", "not-a-listing", "a-list"],
)
def test_malformed_bodies_are_retriable(
    rsps: responses.RequestsMock,
    token: None,
    make_source: Callable[..., RedditSource],
    body: str,
    expected: str,
) -> None:
    rsps.add(responses.GET, SEARCH_ALL, body=body, headers=RATE, content_type="application/json")

    with pytest.raises(RetriableSourceError, match=expected):
        list(make_source().fetch("search:all", {}))


def test_a_failed_poll_keeps_the_cursor_and_no_secret_reaches_the_database_or_logs(
    db: Database,
    make_settings: Callable[..., Settings],
    rsps: responses.RequestsMock,
    token: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cursor = {"newest": 1718019900.0, "seen": {"t3_1dcq9k2": 1718019900.0}}
    seed_cursor(db, "search:all", cursor)
    serve(rsps, SEARCH_ALL, fixture("error_403_private.json"), status=403)
    settings = reddit_settings(make_settings, username="brand_watch", password=PASSWORD)
    collector = collector_for(settings, db)
    try:
        with caplog.at_level(logging.DEBUG):
            report = collector.collect()
    finally:
        collector.close()

    assert len(report.errors) == 1
    row = source_state(db, "search:all")
    assert row.cursor == cursor and row.consecutive_errors == 1
    columns = {c.key: getattr(row, c.key) for c in SourceStateRow.__table__.columns}
    for secret in (SECRET, PASSWORD):
        assert secret not in json.dumps(columns, default=str)
        assert secret not in caplog.text


def test_praw_never_warns_about_async_inside_an_event_loop(
    rsps: responses.RequestsMock,
    token: None,
    make_source: Callable[..., RedditSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    serve(rsps, SEARCH_ALL, fixture("empty.json"))
    source = make_source()

    async def poll() -> list[Any]:
        return list(source.fetch("search:all", {}))

    with caplog.at_level(logging.WARNING):
        asyncio.run(poll())

    assert "Async PRAW" not in caplog.text and caplog.records == []


# --- configuration ----------------------------------------------------------------------------


def test_a_source_without_app_credentials_is_skipped_with_the_reason(
    db: Database, make_settings: Callable[..., Settings], rsps: responses.RequestsMock
) -> None:
    settings = make_settings(sources=[{"type": "reddit", "name": "reddit"}])
    collector = Collector(settings, db)
    try:
        report = collector.collect()
    finally:
        collector.close()

    assert report.skipped["reddit"] == (
        "no Reddit app credentials: set REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET "
        "(or the source's client_id / client_secret) to enable it"
    )
    assert report.streams == [] and len(rsps.calls) == 0
    assert collector.due_sources() == []


def test_credentials_from_optional_env_vars_load_unset_and_enable_when_set() -> None:
    raw = {
        "database": "sqlite://",
        "brands": [BRAND],
        "sources": [
            {
                "type": "reddit",
                "name": "reddit",
                "client_id": "${REDDIT_CLIENT_ID:-}",
                "client_secret": "${REDDIT_CLIENT_SECRET:-}",
                "username": "${REDDIT_USERNAME:-}",
                "password": "${REDDIT_PASSWORD:-}",
            }
        ],
    }

    unset = settings_from_dict(raw, env={})
    assert RedditSource(unset.sources[0], unset.brands).disabled_reason() == (
        "no Reddit app credentials: set REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET "
        "(or the source's client_id / client_secret) to enable it"
    )
    half = settings_from_dict(raw, env={"REDDIT_CLIENT_ID": CLIENT_ID})
    reason = RedditSource(half.sources[0], half.brands).disabled_reason()
    assert reason is not None and "REDDIT_CLIENT_SECRET" in reason and "REDDIT_CLIENT_ID" not in reason

    app = settings_from_dict(raw, env={"REDDIT_CLIENT_ID": CLIENT_ID, "REDDIT_CLIENT_SECRET": SECRET})
    assert RedditSource(app.sources[0], app.brands).disabled_reason() is None
    assert app.sources[0].username is None
    assert SECRET not in repr(app) and SECRET not in str(app.sources[0])

    env = {"REDDIT_CLIENT_ID": CLIENT_ID, "REDDIT_CLIENT_SECRET": SECRET, "REDDIT_USERNAME": "brand_watch"}
    no_password = settings_from_dict(raw, env=env)
    reason = RedditSource(no_password.sources[0], no_password.brands).disabled_reason()
    assert reason is not None and "REDDIT_PASSWORD" in reason


def test_subreddit_names_are_normalised_and_bad_ones_refused() -> None:
    config = RedditConfig(name="reddit", subreddits=["r/france", "/r/BouyguesTelecom/", "france+forfaits"])
    assert config.subreddits == ("france", "BouyguesTelecom", "forfaits")

    with pytest.raises(ValidationError, match="leave subreddits empty to search all"):
        RedditConfig(name="reddit", subreddits=["all"])
    with pytest.raises(ValidationError, match="is not a subreddit name"):
        RedditConfig(name="reddit", subreddits=["bouygues telecom"])


def test_the_default_query_quotes_multi_word_terms_and_follows_the_sources_brands() -> None:
    settings = settings_from_dict(
        {
            "database": "sqlite://",
            "brands": [BRAND, {"name": "Free", "aliases": ["Free Mobile", "Freebox"]}],
        }
    )
    assert default_query(settings.brands) == (
        '"Bouygues Telecom" OR "Bouygues Télécom" OR BouyguesTelecom OR Free OR "Free Mobile" OR Freebox'
    )
    only_free = RedditSource(RedditConfig(name="reddit", brands=("Free",)), settings.brands)
    assert only_free.query == 'Free OR "Free Mobile" OR Freebox'
